import * as grpc from "@grpc/grpc-js";
import client from "prom-client";
import { GatewayLimiter } from "../client/gateway-limiter.js";
import type { Descriptor } from "../client/key-table.js";
import type { ClientTransport, LimiterLogger } from "../client/transport.js";
import { bucketDescriptor, type RlqsConfig } from "../config/rlqs.js";
import { type Clock, every, type Timer } from "../core/clock.js";
import {
  ERRORS,
  InvalidArgumentError,
  RlqsBoundError,
  ShardlimitError,
  UnavailableError,
} from "../core/errors.js";
import { PolicyKind } from "../core/policy.js";
import { MalformedRequest } from "../protocol/proto.js";

/**
 * Envoy's Rate Limit Quota Service (`envoy.service.rate_limit_quota.v3`, RLQS) on top of the
 * owners' batched-mode policies. Each stream is one gateway to the owners: an embedded
 * GatewayLimiter (client id `rlqs/<stream>`) takes each bucket's reported usage as the counts of
 * its counter, reports them to the key's owner every `report_interval`, and each policy that comes
 * back is pushed to Envoy as the bucket's assignment:
 * - ALLOW -> blanket ALLOW_ALL, REJECT_UNTIL -> blanket DENY_ALL;
 * - GRANT and REJECT_FRACTION -> a token bucket holding the grant of one interval and refilled by
 *   it every interval (the rate the owner gave this stream). Envoy's filter implements blanket
 *   rules and token buckets; `requests_per_time_unit` it does not, so it is not sent.
 * The time to live is the policy's own (three report intervals; a token bucket ten), or twice the
 * time between the bucket's reports when Envoy reports less often, so an assignment lasts until the
 * next report.
 * Envoy starts a changed token bucket full: up to one interval's grant more than the owner meant.
 * The owner's counter is exact (every unit Envoy reports is charged), so that surplus is debt the
 * next grants pay back, and the admitted rate settles on the limit.
 */

/** The decoded messages (protobufjs objects: camelCase, int64 as numbers). */
interface Duration {
  seconds?: number;
  nanos?: number;
}
interface BucketId {
  bucket?: Record<string, string>;
}
interface BucketUsage {
  bucketId?: BucketId | null;
  timeElapsed?: Duration | null;
  numRequestsAllowed?: number;
  numRequestsDenied?: number;
}
export interface RlqsReports {
  domain?: string;
  bucketQuotaUsages?: BucketUsage[];
}
export interface RlqsStrategy {
  blanketRule?: number;
  tokenBucket?: { maxTokens: number; tokensPerFill: { value: number }; fillInterval: Duration };
}
export interface RlqsAction {
  bucketId: { bucket: Record<string, string> };
  quotaAssignmentAction?: { assignmentTimeToLive?: Duration; rateLimitStrategy: RlqsStrategy };
  abandonAction?: Record<string, never>;
}
export interface RlqsResponse {
  bucketAction: RlqsAction[];
}

export type RlqsCall = grpc.ServerDuplexStream<RlqsReports | MalformedRequest, RlqsResponse>;

/** `RateLimitStrategy.BlanketRule`. */
export const BlanketRule = { ALLOW_ALL: 0, DENY_ALL: 1 } as const;

/** How many report intervals a token bucket assignment lasts at least. */
export const RATE_LIFETIME_INTERVALS = 10;

/** Reports a stream may send before its gateway client knows the limits (the first second or so). */
const MAX_QUEUED = 64;

/** Bounds on what one report may carry (beyond the config's bucket count). */
const MAX_BUCKET_ENTRIES = 32;
const MAX_TEXT = 256;

/** What the service records (metrics.ts style: narrow, a no-op in tests that do not look). */
export interface RlqsMetrics {
  /** A report arrived carrying `usages` bucket usages. */
  report(usages: number): void;
  /** Bucket actions sent to Envoy, by kind. */
  sent(kind: RlqsActionKind, n: number): void;
  /** A stream refused or ended with an error, by the error's code (e.g. INVALID_ARGUMENT). */
  refused(code: string): void;
}
export type RlqsActionKind = "allow_all" | "deny_all" | "token_bucket" | "abandon";

export const noopRlqsMetrics: RlqsMetrics = { report() {}, sent() {}, refused() {} };

export interface RlqsDeps {
  /** The mapping in force; `RlqsService.setConfig` replaces it (a reloaded --rlqs-config). */
  config: RlqsConfig;
  /** The servers each stream's gateway client learns the limits and the assignment from. */
  servers: () => readonly string[];
  transport: ClientTransport;
  clock: Clock;
  log: LimiterLogger;
  /** How long a stream waits for the limits before it is ended UNAVAILABLE (default 10 s). */
  readyTimeoutMs?: number;
  metrics?: RlqsMetrics;
}

/**
 * The service's metrics in `registry`: streams open and buckets held (read at scrape time from
 * `service`), reports received, actions sent by kind, refusals by code.
 */
export function registerRlqsMetrics(
  registry: client.Registry,
  service: () => RlqsService | undefined,
): RlqsMetrics {
  new client.Gauge({
    name: "shardlimit_rlqs_streams",
    help: "Envoy RLQS streams open on this server",
    registers: [registry],
    collect() {
      this.set(service()?.openStreams ?? 0);
    },
  });
  new client.Gauge({
    name: "shardlimit_rlqs_buckets",
    help: "RLQS buckets held by this server's open streams",
    registers: [registry],
    collect() {
      this.set(service()?.buckets ?? 0);
    },
  });
  const reports = new client.Counter({
    name: "shardlimit_rlqs_reports_total",
    help: "RLQS usage reports received",
    registers: [registry],
  });
  const usages = new client.Counter({
    name: "shardlimit_rlqs_bucket_usages_total",
    help: "Bucket usages in the RLQS reports received",
    registers: [registry],
  });
  const sent = new client.Counter({
    name: "shardlimit_rlqs_actions_total",
    help: "RLQS bucket actions sent to Envoy, by kind (allow_all, deny_all, token_bucket assignments; abandon)",
    labelNames: ["kind"],
    registers: [registry],
  });
  const refused = new client.Counter({
    name: "shardlimit_rlqs_refusals_total",
    help: "RLQS streams refused or ended with an error, by code",
    labelNames: ["code"],
    registers: [registry],
  });
  return {
    report(n) {
      reports.inc();
      if (n > 0) usages.inc(n);
    },
    sent: (kind, n) => sent.inc({ kind }, n),
    refused: (code) => refused.inc({ code }),
  };
}

function kindOf(a: RlqsAction): RlqsActionKind {
  if (a.abandonAction) return "abandon";
  const s = a.quotaAssignmentAction?.rateLimitStrategy;
  if (s?.tokenBucket) return "token_bucket";
  return s?.blanketRule === BlanketRule.DENY_ALL ? "deny_all" : "allow_all";
}

export function durationOf(ms: number): Duration {
  const whole = Math.floor(ms / 1000);
  return { seconds: whole, nanos: Math.round((ms - whole * 1000) * 1e6) };
}

function msOf(d: Duration | null | undefined): number {
  return d ? Number(d.seconds ?? 0) * 1000 + (d.nanos ?? 0) / 1e6 : 0;
}

/** The bucket id as one string, its entries sorted (Envoy: the order of keys does not matter). */
function bucketName(bucket: Record<string, string>): string {
  return JSON.stringify(
    Object.keys(bucket)
      .sort()
      .map((k) => [k, bucket[k]]),
  );
}

/**
 * What a policy becomes for Envoy: the strategy, and how long it lasts (ms). `share` divides a
 * grant among this stream's buckets that count on the same counter.
 */
export function assignmentOf(
  p: { kind: PolicyKind; granted: number; until: number },
  now: number,
  intervalMs: number,
  share = 1,
): { strategy: RlqsStrategy; ttlMs: number } {
  const ttlMs = Math.max(0, p.until - now);
  switch (p.kind) {
    case PolicyKind.ALLOW:
      return { strategy: { blanketRule: BlanketRule.ALLOW_ALL }, ttlMs };
    case PolicyKind.REJECT_UNTIL:
      return { strategy: { blanketRule: BlanketRule.DENY_ALL }, ttlMs };
    default: {
      const tokens = Math.round(p.granted / share);
      // A grant under one request per interval: nothing now; the next report asks again.
      if (tokens < 1)
        return { strategy: { blanketRule: BlanketRule.DENY_ALL }, ttlMs: Math.min(ttlMs, intervalMs) };
      // A rate limits itself: it may outlive the policy, so an owner slow to answer (a stall, a
      // move) leaves Envoy on this stream's last rate rather than on its no-assignment behaviour
      // (allow all, by default).
      return {
        strategy: {
          tokenBucket: {
            maxTokens: tokens,
            tokensPerFill: { value: tokens },
            fillInterval: durationOf(intervalMs),
          },
        },
        ttlMs: Math.max(ttlMs, RATE_LIFETIME_INTERVALS * intervalMs),
      };
    }
  }
}

interface Bucket {
  readonly id: Record<string, string>;
  readonly name: string;
  /** Undefined: no mapping takes it. Mapped again when the config is reloaded. */
  descriptor: Descriptor | undefined;
  counterKey: string | undefined;
  /** The strategy last sent (JSON), and until when it holds at Envoy. */
  sent: string;
  sentUntil: number;
  /** Twice the time between its reports: the least an assignment must last. */
  ttlFloorMs: number;
  lastReport: number;
}

/** The RLQS service of one server: its open streams, bounded by `max_streams`. */
export class RlqsService {
  private readonly streams = new Set<RlqsStream>();
  private seq = 0;
  /** Shared with every stream: `config` is read there on each use, so a new one applies at once. */
  private readonly deps: RlqsDeps & { metrics: RlqsMetrics };

  constructor(deps: RlqsDeps) {
    this.deps = { ...deps, metrics: deps.metrics ?? noopRlqsMetrics };
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** Buckets held by the open streams. */
  get buckets(): number {
    let n = 0;
    for (const s of this.streams) n += s.bucketCount;
    return n;
  }

  get config(): RlqsConfig {
    return this.deps.config;
  }

  /**
   * A new mapping (a reloaded --rlqs-config): bounds apply at once, new buckets map by it, and
   * every open stream's buckets are mapped again (a bucket whose descriptor changed is counted on
   * its new key from its next report). `report_interval` applies to streams opened after it.
   */
  setConfig(config: RlqsConfig): void {
    this.deps.config = config;
    for (const s of this.streams) s.remap();
  }

  /** The grpc-js handler of `StreamRateLimitQuotas`. */
  readonly handle = (call: RlqsCall): void => {
    const max = this.deps.config.maxStreams;
    if (this.streams.size >= max) {
      fail(
        call,
        new RlqsBoundError(`this server holds max_streams (${max}) RLQS streams already; try another`),
        this.deps.metrics,
      );
      return;
    }
    const s = new RlqsStream(this.deps, call, `rlqs/${++this.seq}`, () => this.streams.delete(s));
    this.streams.add(s);
  };

  /** Ends every stream (server shutdown): their counts are flushed to the owners first. */
  close(): void {
    for (const s of [...this.streams]) s.close(true);
  }
}

function fail(call: RlqsCall, err: unknown, metrics: RlqsMetrics): void {
  metrics.refused(err instanceof ShardlimitError ? err.code : "INTERNAL");
  const status =
    err instanceof ShardlimitError
      ? { code: ERRORS[err.code].grpc, details: err.message }
      : { code: grpc.status.INTERNAL, details: "internal error" };
  call.emit("error", status);
}

class RlqsStream {
  private readonly limiter: GatewayLimiter;
  private readonly buckets = new Map<string, Bucket>();
  private readonly byCounter = new Map<string, Set<Bucket>>();
  private domain: string | undefined;
  private ready = false;
  private readonly queued: RlqsReports[] = [];
  private closed = false;
  private readonly sweeper: Timer;

  constructor(
    private readonly deps: RlqsDeps & { metrics: RlqsMetrics },
    private readonly call: RlqsCall,
    clientId: string,
    private readonly gone: () => void,
  ) {
    const config = deps.config;
    this.limiter = new GatewayLimiter({
      servers: deps.servers(),
      clientId,
      transport: deps.transport,
      clock: deps.clock,
      reportIntervalMs: config.reportIntervalMs,
      logger: deps.log,
      onPolicy: (counterKey) => this.push(counterKey),
    });
    this.limiter.start();
    this.limiter.whenReady(deps.readyTimeoutMs ?? 10_000).then(
      () => {
        this.ready = true;
        for (const m of this.queued.splice(0)) if (!this.closed) this.guard(() => this.apply(m));
      },
      () => this.end(new UnavailableError("the limits are not known yet: no server answered; retry shortly")),
    );
    // Buckets Envoy stopped reporting are abandoned (Envoy then forgets them too).
    this.sweeper = every(deps.clock, config.abandonAfterMs / 4, () => this.abandonIdle());
    call.on("data", (m: RlqsReports | MalformedRequest) => this.guard(() => this.receive(m)));
    call.on("end", () => this.close(true));
    call.on("cancelled", () => this.close(false));
    call.on("error", () => this.close(false));
  }

  get bucketCount(): number {
    return this.buckets.size;
  }

  /** Maps every bucket by the config now in force; a changed one is re-sent on its next report. */
  remap(): void {
    if (this.domain === undefined) return;
    for (const b of this.buckets.values()) {
      const d = bucketDescriptor(this.deps.config, this.domain, b.id);
      if (JSON.stringify(d) === JSON.stringify(b.descriptor)) continue;
      b.descriptor = d;
      b.sent = "";
      b.sentUntil = 0;
    }
  }

  private send(actions: RlqsAction[]): void {
    if (actions.length === 0) return;
    const counts = new Map<RlqsActionKind, number>();
    for (const a of actions) {
      const k = kindOf(a);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const [k, n] of counts) this.deps.metrics.sent(k, n);
    this.call.write({ bucketAction: actions });
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.end(err);
    }
  }

  private receive(m: RlqsReports | MalformedRequest): void {
    if (m instanceof MalformedRequest) throw new InvalidArgumentError(`malformed ${m.type}: ${m.reason}`);
    const domain = m.domain ?? "";
    if (this.domain === undefined) {
      if (domain === "") throw new InvalidArgumentError("domain is empty: the first report must name it");
      if (domain.length > MAX_TEXT) throw new InvalidArgumentError(`domain is over ${MAX_TEXT} characters`);
      this.domain = domain;
    } else if (domain !== "" && domain !== this.domain) {
      throw new InvalidArgumentError(
        `domain ${JSON.stringify(domain)} differs from the stream's ${JSON.stringify(this.domain)}: open a new stream`,
      );
    }
    this.check(m);
    this.deps.metrics.report(m.bucketQuotaUsages?.length ?? 0);
    if (this.ready) this.apply(m);
    else if (this.queued.length >= MAX_QUEUED) {
      throw new RlqsBoundError(
        `${MAX_QUEUED} reports arrived before this server knew the limits; report less often, or retry shortly`,
      );
    } else this.queued.push(m);
  }

  /** Every usage valid, and the bucket bound kept, before any is counted: a bad report changes nothing. */
  private check(m: RlqsReports): void {
    const usages = m.bucketQuotaUsages ?? [];
    const fresh = new Set<string>();
    usages.forEach((u, i) => {
      const at = `bucket_quota_usages[${i}]`;
      const bucket = u.bucketId?.bucket ?? {};
      const keys = Object.keys(bucket);
      if (keys.length === 0) throw new InvalidArgumentError(`${at}.bucket_id has no entries`);
      if (keys.length > MAX_BUCKET_ENTRIES) {
        throw new InvalidArgumentError(
          `${at}.bucket_id has ${keys.length} entries, over ${MAX_BUCKET_ENTRIES}`,
        );
      }
      for (const k of keys) {
        const v = bucket[k]!;
        if (k === "" || v === "") throw new InvalidArgumentError(`${at}.bucket_id has an empty key or value`);
        if (k.length > MAX_TEXT || v.length > MAX_TEXT) {
          throw new InvalidArgumentError(
            `${at}.bucket_id entry ${JSON.stringify(k.slice(0, 40))} is over ${MAX_TEXT} characters`,
          );
        }
      }
      for (const f of ["numRequestsAllowed", "numRequestsDenied"] as const) {
        const n = Number(u[f] ?? 0);
        if (!Number.isSafeInteger(n) || n < 0)
          throw new InvalidArgumentError(`${at}.${snake(f)} is not a count: ${n}`);
      }
      const name = bucketName(bucket);
      if (!this.buckets.has(name)) fresh.add(name);
    });
    const max = this.deps.config.maxBucketsPerStream;
    if (this.buckets.size + fresh.size > max) {
      throw new RlqsBoundError(
        `the report would make ${this.buckets.size + fresh.size} buckets on this stream, over max_buckets_per_stream (${max})`,
      );
    }
  }

  private apply(m: RlqsReports): void {
    const now = this.deps.clock.now();
    const actions: RlqsAction[] = [];
    for (const u of m.bucketQuotaUsages ?? []) {
      const id = u.bucketId!.bucket!;
      const name = bucketName(id);
      let b = this.buckets.get(name);
      const fresh = b === undefined;
      if (b === undefined) {
        if (this.buckets.size >= this.deps.config.maxBucketsPerStream) {
          throw new RlqsBoundError(`over max_buckets_per_stream (${this.deps.config.maxBucketsPerStream})`);
        }
        b = {
          id: { ...id },
          name,
          descriptor: bucketDescriptor(this.deps.config, this.domain!, id),
          counterKey: undefined,
          sent: "",
          sentUntil: 0,
          ttlFloorMs: 0,
          lastReport: now,
        };
        this.buckets.set(name, b);
      }
      b.lastReport = now;
      const elapsed = msOf(u.timeElapsed);
      if (elapsed > 0) b.ttlFloorMs = Math.min(2 * elapsed, 600_000);
      const counterKey = b.descriptor
        ? this.limiter.record(
            b.descriptor,
            Number(u.numRequestsAllowed ?? 0),
            Number(u.numRequestsDenied ?? 0),
          )
        : undefined;
      if (counterKey !== b.counterKey) this.rekey(b, counterKey);
      // A bucket no limit applies to gets the blanket rule at once; one with a counter waits for
      // its owner's policy (pushed when it comes), unless one is in force already.
      const a = counterKey === undefined ? this.blanket(b, fresh) : this.assignment(b, now);
      if (a) actions.push(a);
    }
    this.send(actions);
  }

  private blanket(b: Bucket, fresh: boolean): RlqsAction | undefined {
    const rule =
      b.descriptor === undefined && this.deps.config.unmatched === "deny_all" ? "DENY_ALL" : "ALLOW_ALL";
    const strategy = { blanketRule: BlanketRule[rule] };
    const text = JSON.stringify(strategy);
    if (!fresh && b.sent === text) return undefined;
    b.sent = text;
    b.sentUntil = Number.POSITIVE_INFINITY;
    // No time to live: it holds until this server says otherwise.
    return { bucketId: { bucket: b.id }, quotaAssignmentAction: { rateLimitStrategy: strategy } };
  }

  private rekey(b: Bucket, counterKey: string | undefined): void {
    if (b.counterKey !== undefined) this.byCounter.get(b.counterKey)?.delete(b);
    b.counterKey = counterKey;
    if (counterKey === undefined) return;
    let set = this.byCounter.get(counterKey);
    if (set === undefined) {
      set = new Set();
      this.byCounter.set(counterKey, set);
    }
    set.add(b);
  }

  /** The bucket's assignment from its counter's policy, if it differs from what Envoy holds or is half spent. */
  private assignment(b: Bucket, now: number, force = false): RlqsAction | undefined {
    const p = this.limiter.policyOf(b.descriptor!);
    if (p === undefined) return undefined;
    const share = this.byCounter.get(b.counterKey!)?.size ?? 1;
    const a = assignmentOf(p, now, this.deps.config.reportIntervalMs, share);
    const ttlMs = Math.max(a.ttlMs, b.ttlFloorMs);
    const text = JSON.stringify(a.strategy);
    const holds = b.sent === text && b.sentUntil - now > ttlMs / 2;
    if (holds && !force) return undefined;
    b.sent = text;
    b.sentUntil = now + ttlMs;
    return {
      bucketId: { bucket: b.id },
      quotaAssignmentAction: { assignmentTimeToLive: durationOf(ttlMs), rateLimitStrategy: a.strategy },
    };
  }

  /** A policy for `counterKey` arrived: its buckets' assignments go to Envoy. */
  private push(counterKey: string): void {
    if (this.closed) return;
    const set = this.byCounter.get(counterKey);
    if (set === undefined) return;
    const now = this.deps.clock.now();
    const actions: RlqsAction[] = [];
    for (const b of set) {
      const a = this.assignment(b, now);
      if (a) actions.push(a);
    }
    this.send(actions);
  }

  private abandonIdle(): void {
    const now = this.deps.clock.now();
    const actions: RlqsAction[] = [];
    for (const b of this.buckets.values()) {
      if (now - b.lastReport < this.deps.config.abandonAfterMs) continue;
      this.buckets.delete(b.name);
      this.rekey(b, undefined);
      actions.push({ bucketId: { bucket: b.id }, abandonAction: {} });
    }
    this.send(actions);
  }

  /** Ends the stream with `err`'s status. */
  private end(err: unknown): void {
    if (this.closed) return;
    this.close(false);
    fail(this.call, err, this.deps.metrics);
  }

  close(flush: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.sweeper.cancel();
    if (flush) this.limiter.flush();
    this.limiter.close();
    this.gone();
    if (flush) this.call.end();
  }
}

function snake(f: string): string {
  return f.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
