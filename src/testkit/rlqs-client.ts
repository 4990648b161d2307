import * as grpc from "@grpc/grpc-js";
import { RLQS_SERVICE, serviceDefinition } from "../protocol/proto.js";

/**
 * A client of Envoy's Rate Limit Quota Service that behaves as Envoy's `rate_limit_quota` HTTP
 * filter is documented to (rlqs.proto and the filter's configuration reference), on Envoy's own
 * protos:
 * - requests are matched into buckets by bucket id; the first request of a bucket creates it,
 *   applies the no-assignment behaviour (allow all unless told otherwise) and reports at once;
 * - every `reportIntervalMs`, one report with each bucket's allowed and denied counts since the
 *   last, and the time elapsed;
 * - an assignment with the strategy already active extends its time to live; a different one (or
 *   one for an expired or new bucket) reports the bucket's usage at once and replaces it, a token
 *   bucket starting full (`max_tokens`, as TokenBucket says) and refilled continuously at
 *   `tokens_per_fill` per `fill_interval`;
 * - an expired assignment falls back to the no-assignment behaviour; an abandon action erases the
 *   bucket.
 */

type Strategy = {
  blanketRule?: number;
  tokenBucket?: {
    maxTokens?: number;
    tokensPerFill?: { value?: number } | null;
    fillInterval?: Duration | null;
  };
  requestsPerTimeUnit?: unknown;
};
interface Duration {
  seconds?: number;
  nanos?: number;
}
interface Action {
  bucketId?: { bucket?: Record<string, string> };
  quotaAssignmentAction?: {
    assignmentTimeToLive?: Duration | null;
    rateLimitStrategy?: Strategy | null;
  } | null;
  abandonAction?: object | null;
}

interface Bucket {
  id: Record<string, string>;
  allowed: number;
  denied: number;
  lastReport: number;
  /** The active assignment's strategy (JSON) and expiry; none: no assignment. */
  active: string | undefined;
  expiresAt: number;
  deny: boolean;
  tokens: number;
  maxTokens: number;
  /** Tokens per ms; 0: not a token bucket. */
  fillRate: number;
  filledAt: number;
}

export interface EnvoyRlqsClientOptions {
  address: string;
  domain: string;
  reportIntervalMs: number;
  /** `no_assignment_behavior` (and the expired-assignment fallback): allow all (default) or deny all. */
  noAssignment?: "allow" | "deny";
  credentials?: grpc.ChannelCredentials;
}

const msOf = (d: Duration | null | undefined): number =>
  d ? Number(d.seconds ?? 0) * 1000 + (d.nanos ?? 0) / 1e6 : Number.POSITIVE_INFINITY;

function nameOf(id: Record<string, string>): string {
  return JSON.stringify(
    Object.keys(id)
      .sort()
      .map((k) => [k, id[k]]),
  );
}

const Client = grpc.makeClientConstructor(serviceDefinition(RLQS_SERVICE), RLQS_SERVICE);

export class EnvoyRlqsClient {
  private readonly client: grpc.Client;
  private readonly stream: grpc.ClientDuplexStream<object, { bucketAction?: Action[] }>;
  private readonly buckets = new Map<string, Bucket>();
  private readonly timer: NodeJS.Timeout;
  private sentDomain = false;
  /** Requests this client let through and turned away, in all. */
  allowed = 0;
  denied = 0;
  assignments = 0;
  /** The stream's end: its status, once ended. */
  readonly ended: Promise<grpc.StatusObject>;

  constructor(private readonly o: EnvoyRlqsClientOptions) {
    this.client = new Client(o.address, o.credentials ?? grpc.credentials.createInsecure());
    const stream = (
      this.client as unknown as Record<string, () => typeof this.stream>
    ).StreamRateLimitQuotas!.call(this.client);
    this.stream = stream;
    stream.on("data", (res) => this.onResponse(res.bucketAction ?? []));
    this.ended = new Promise((resolve) => {
      stream.on("status", resolve);
      stream.on("error", () => {});
    });
    this.timer = setInterval(() => this.report([...this.buckets.values()]), o.reportIntervalMs);
  }

  /** One request matched into bucket `id`: whether it is allowed. */
  request(id: Record<string, string>): boolean {
    const now = performance.now();
    const name = nameOf(id);
    let b = this.buckets.get(name);
    if (b === undefined) {
      b = {
        id,
        allowed: 0,
        denied: 0,
        lastReport: now,
        active: undefined,
        expiresAt: 0,
        deny: false,
        tokens: 0,
        maxTokens: 0,
        fillRate: 0,
        filledAt: now,
      };
      this.buckets.set(name, b);
      const ok = this.decide(b, now);
      this.report([b]);
      return ok;
    }
    return this.decide(b, now);
  }

  private decide(b: Bucket, now: number): boolean {
    let ok: boolean;
    if (b.active === undefined || now >= b.expiresAt) ok = this.o.noAssignment !== "deny";
    else if (b.fillRate > 0) {
      b.tokens = Math.min(b.maxTokens, b.tokens + (now - b.filledAt) * b.fillRate);
      b.filledAt = now;
      ok = b.tokens >= 1;
      if (ok) b.tokens -= 1;
    } else ok = !b.deny;
    if (ok) {
      b.allowed++;
      this.allowed++;
    } else {
      b.denied++;
      this.denied++;
    }
    return ok;
  }

  private report(buckets: Bucket[]): void {
    if (buckets.length === 0) return;
    const now = performance.now();
    const usages = buckets.map((b) => {
      const elapsed = Math.max(1, now - b.lastReport);
      const u = {
        bucketId: { bucket: b.id },
        timeElapsed: { seconds: Math.floor(elapsed / 1000), nanos: Math.round((elapsed % 1000) * 1e6) },
        numRequestsAllowed: b.allowed,
        numRequestsDenied: b.denied,
      };
      b.allowed = 0;
      b.denied = 0;
      b.lastReport = now;
      return u;
    });
    // The domain goes in the first report only.
    this.stream.write({ domain: this.sentDomain ? "" : this.o.domain, bucketQuotaUsages: usages });
    this.sentDomain = true;
  }

  private onResponse(actions: Action[]): void {
    const now = performance.now();
    for (const a of actions) {
      const b = this.buckets.get(nameOf(a.bucketId?.bucket ?? {}));
      if (b === undefined) continue;
      if (a.abandonAction) {
        this.buckets.delete(nameOf(b.id));
        continue;
      }
      const q = a.quotaAssignmentAction;
      if (!q) continue;
      this.assignments++;
      const s = q.rateLimitStrategy ?? { blanketRule: 0 };
      const text = JSON.stringify(s);
      const expiresAt = now + msOf(q.assignmentTimeToLive);
      if (b.active === text && now < b.expiresAt) {
        b.expiresAt = expiresAt;
        continue;
      }
      this.report([b]);
      b.active = text;
      b.expiresAt = expiresAt;
      const tb = s.tokenBucket;
      if (tb) {
        b.maxTokens = tb.maxTokens ?? 0;
        b.tokens = b.maxTokens;
        b.fillRate = (tb.tokensPerFill?.value ?? 1) / msOf(tb.fillInterval);
        b.filledAt = now;
        b.deny = false;
      } else {
        b.fillRate = 0;
        b.deny = (s.blanketRule ?? 0) === 1;
      }
    }
  }

  /** Sends the last counts and closes the stream; resolves with its status. */
  async close(): Promise<grpc.StatusObject> {
    clearInterval(this.timer);
    this.report([...this.buckets.values()]);
    this.stream.end();
    const status = await Promise.race([
      this.ended,
      new Promise<grpc.StatusObject>((r) =>
        setTimeout(
          () =>
            r({ code: grpc.status.DEADLINE_EXCEEDED, details: "no status", metadata: new grpc.Metadata() }),
          5000,
        ),
      ),
    ]);
    this.client.close();
    return status;
  }
}
