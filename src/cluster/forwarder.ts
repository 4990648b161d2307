import { randomBytes } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import { type Context, ROOT_CONTEXT } from "@opentelemetry/api";
import { type Clock, sleep, systemClock } from "../core/clock.js";
import { NotOwnerError, UnavailableError } from "../core/errors.js";
import { DEFAULT_INPUT_LIMITS } from "../protocol/input-limits.js";
import { ErrorCode, errorFromItem, type ItemError, serverRetries } from "../protocol/item-errors.js";
import type {
  CheckRequest,
  CheckResponse,
  EnvoyRequest,
  EnvoyResponse,
  ForwardRequest,
  ForwardResponse,
  PoolReportRequest,
  PoolReportResponse,
  SettleRequest,
  SettleResponse,
} from "../protocol/messages.js";
import { activeTracer, clientSpan, currentContext, metadataFor } from "../protocol/tracing.js";
import type { Owner } from "../server/ownership.js";
import { ForwardExpiredError, type Forwarder, ForwardLostError } from "../server/router.js";
import type { PeerRpc } from "./peers.js";

export interface ForwarderOptions {
  /** Only the Forward call is used: tests pass a fake with just that. */
  peer: (address: string) => Pick<PeerRpc, "forward">;
  /** Most parts in one Forward call. */
  maxBatch?: number;
  /** Most items (check items, Envoy descriptors) over one call's parts: the owner's maxForwardItems. */
  maxItems?: number;
  /** Forward calls in flight per owner; parts queue (and batch) behind them. */
  maxInFlight?: number;
  deadlineMs?: number;
  /**
   * Parts waiting per owner (not yet sent, behind the calls in flight). Past it a part is refused
   * at once with UnavailableError (OWNER_UNAVAILABLE per item), never queued nor sent.
   */
  maxQueued?: number;
  /**
   * How long a part may wait in its owner's queue (less when its caller's own deadline comes
   * first: `until`). A part still unsent past it is dropped, never sent (so never charged), and
   * rejected with UnavailableError: its caller has likely given up.
   */
  queueMs?: number;
  /**
   * Times a call that failed as a whole (deadline, connection) is sent again, unchanged, before its
   * parts fail: its answer may have been lost after the owner applied it, and only a resend with
   * the same part ids is answered from the owner's memory instead of being charged again.
   */
  resends?: number;
  /** Wait before a resend. */
  resendMs?: number;
  clock?: Clock;
  /** This sender's id in part ids; one per process run, so a restart never reuses a sequence. */
  sender?: string;
  /** Counts forwarded parts and calls, for metrics. */
  onCall?: (owner: string, parts: number, ok: boolean) => void;
}

/** One forwarded part waiting for its call: the request, its id, its caller, when its wait ends. */
interface Part<Req, Res> {
  req: Req;
  id: number;
  resolve(v: Res): void;
  reject(e: Error): void;
  /** On the clock's `elapsed()`: `queueMs` after it came, or its caller's deadline if sooner. */
  deadline: number;
  /** Whether `deadline` is its caller's (for the error's words). */
  callers: boolean;
  /** Tracing on: the caller's context, the parent (or a link) of the call's span. */
  ctx: Context | undefined;
}

class OwnerQueue {
  /** Parts by kind, in order of arrival (their deadlines need not ascend: callers' differ). */
  envoy: Part<EnvoyRequest, EnvoyResponse>[] = [];
  checks: Part<CheckRequest, CheckResponse>[] = [];
  inFlight = 0;
  scheduled = false;
  generation = 0;
  get size(): number {
    return this.envoy.length + this.checks.length;
  }
}

/**
 * A part's error: NOT_OWNER typed with the owner's generation, the codes a forwarding server tries
 * again (not ready, owner unavailable) as UnavailableError, the others (COUNTERS_EXHAUSTED,
 * INVALID_KEY...) as the typed error of their code: that part failed, and only that part.
 */
function asError(e: ItemError | null | undefined, generation: number): Error | undefined {
  if (!e?.code) return undefined;
  if (e.code === ErrorCode.NOT_OWNER) return new NotOwnerError(e.message, generation);
  if (serverRetries(e.code)) return new UnavailableError(e.message);
  return errorFromItem(e, generation);
}

/** The answer to the `i`th check part of a Forward call, or its error. */
function checkAnswer(res: ForwardResponse, i: number): CheckResponse | Error {
  const err = asError(res.checkErrors[i], res.generation);
  if (err) return err;
  return res.checks[i] ?? new UnavailableError("no answer");
}

/** The longest max_wait_ms of `req`'s items (0: none waits). */
function longestWait(req: CheckRequest): number {
  let wait = 0;
  for (const it of req.items) wait = Math.max(wait, it.maxWaitMs ?? 0);
  return wait;
}

/**
 * Micro-batches calls to each owner: parts that arrive in the same turn of the event loop, or
 * while earlier calls to that owner are still in flight, go out together in one `Forward` call.
 * Under load that is one call per owner per round trip, however many requests come in.
 */
export class BatchingForwarder implements Forwarder {
  private readonly queues = new Map<string, OwnerQueue>();
  private readonly maxBatch: number;
  private readonly maxItems: number;
  private readonly maxInFlight: number;
  private readonly deadlineMs: number;
  private readonly maxQueued: number;
  private readonly queueMs: number;
  private readonly clock: Clock;
  private readonly sender: string;
  private seq = 0;
  /** Forward calls of waiting checks in flight (each one its own call). */
  private waitingCalls = 0;

  constructor(private readonly opts: ForwarderOptions) {
    this.maxBatch = opts.maxBatch ?? 512;
    this.maxItems = opts.maxItems ?? DEFAULT_INPUT_LIMITS.maxForwardItems;
    this.maxInFlight = opts.maxInFlight ?? 2;
    this.deadlineMs = opts.deadlineMs ?? 2000;
    this.maxQueued = opts.maxQueued ?? 10_000;
    this.queueMs = opts.queueMs ?? this.deadlineMs;
    this.clock = opts.clock ?? systemClock;
    this.sender = opts.sender ?? randomBytes(8).toString("hex");
  }

  envoy(owner: Owner, req: EnvoyRequest, generation: number, until?: number): Promise<EnvoyResponse> {
    return this.enqueue(owner, generation, (q) => q.envoy, req, until);
  }

  check(owner: Owner, req: CheckRequest, generation: number, until?: number): Promise<CheckResponse> {
    const wait = longestWait(req);
    if (wait > 0) return this.checkWaiting(owner, req, generation, wait);
    return this.enqueue(owner, generation, (q) => q.checks, req, until);
  }

  /**
   * A settle by ticket goes in a call of its own, not batched: a ticket answers a repeated settle
   * with its first answer, so the resends of a call whose answer was lost charge nothing twice.
   */
  async settle(owner: Owner, req: SettleRequest, generation: number): Promise<SettleResponse> {
    const call: ForwardRequest = {
      generation,
      envoy: [],
      checks: [],
      settles: [req],
      sender: this.sender,
      ...callers("settleCallers", [req]),
    };
    let res: ForwardResponse;
    try {
      res = await this.send(owner.address, call, this.deadlineMs, []);
    } catch (err) {
      this.opts.onCall?.(owner.address, 1, false);
      throw new ForwardLostError(
        `forwarding to ${owner.address} failed: ${(err as Error).message}`,
        owner.address,
      );
    }
    this.opts.onCall?.(owner.address, 1, true);
    const part = res.settles?.[0];
    if (part === undefined)
      throw new UnavailableError(`${owner.address} did not answer the settle (an older version?)`);
    return part;
  }

  /**
   * A pool backend's report, in a call of its own like a settle: the owner keeps the latest report
   * per backend, so the resends of a call whose answer was lost change nothing twice.
   */
  async reportPool(owner: Owner, req: PoolReportRequest, generation: number): Promise<PoolReportResponse> {
    const call: ForwardRequest = { generation, envoy: [], checks: [], pools: [req], sender: this.sender };
    let res: ForwardResponse;
    try {
      res = await this.send(owner.address, call, this.deadlineMs, []);
    } catch (err) {
      this.opts.onCall?.(owner.address, 1, false);
      throw new UnavailableError(`forwarding to ${owner.address} failed: ${(err as Error).message}`);
    }
    this.opts.onCall?.(owner.address, 1, true);
    const part = res.pools?.[0];
    if (part === undefined)
      throw new UnavailableError(`${owner.address} did not answer the pool report (an older version?)`);
    return part;
  }

  /**
   * A check whose items wait (max_wait_ms) goes at once in a Forward call of its own, with the
   * deadline of a call plus the wait: batched, it would hold back the parts sent with it, take a
   * slot of `maxInFlight` for the whole wait, and its call's deadline would end the wait early.
   * The owner answers it before that deadline (it cuts the wait to the Forward call's deadline).
   * At most `maxQueued` of them are in flight at once.
   */
  private async checkWaiting(
    owner: Owner,
    req: CheckRequest,
    generation: number,
    wait: number,
  ): Promise<CheckResponse> {
    if (this.waitingCalls >= this.maxQueued) {
      throw new UnavailableError(
        `${this.waitingCalls} waiting checks are being forwarded already (maxQueued ${this.maxQueued}): retry later`,
      );
    }
    this.waitingCalls++;
    const fr: ForwardRequest = {
      generation,
      envoy: [],
      checks: [req],
      sender: this.sender,
      envoyIds: [],
      checkIds: [++this.seq],
      ...callers("checkCallers", [req]),
    };
    let res: ForwardResponse;
    try {
      const ctx = activeTracer() === undefined ? undefined : currentContext();
      res = await this.send(owner.address, fr, this.deadlineMs + wait, [ctx]);
      this.opts.onCall?.(owner.address, 1, true);
    } catch (err) {
      this.opts.onCall?.(owner.address, 1, false);
      throw new ForwardLostError(
        `forwarding to ${owner.address} failed: ${(err as Error).message}`,
        owner.address,
      );
    } finally {
      this.waitingCalls--;
    }
    const answer = checkAnswer(res, 0);
    if (answer instanceof Error) throw answer;
    return answer;
  }

  private enqueue<Req, Res>(
    owner: Owner,
    generation: number,
    list: (q: OwnerQueue) => Part<Req, Res>[],
    req: Req,
    until = Number.POSITIVE_INFINITY,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      const q = this.queue(owner.address);
      if (this.full(owner.address, q, reject)) return;
      const own = this.clock.elapsed() + this.queueMs;
      const deadline = Math.min(own, until);
      const ctx = activeTracer() === undefined ? undefined : currentContext();
      list(q).push({ req, id: ++this.seq, resolve, reject, deadline, callers: until < own, ctx });
      this.schedule(owner.address, q, generation);
    });
  }

  /** Refuses a part when its owner's queue holds `maxQueued` parts already. */
  private full(address: string, q: OwnerQueue, reject: (e: Error) => void): boolean {
    if (q.size < this.maxQueued) return false;
    if (q.size === 0 && q.inFlight === 0) this.queues.delete(address);
    reject(
      new UnavailableError(
        `${q.size} parts already wait to be forwarded to ${address} (maxQueued ${this.maxQueued}): the owner is overloaded`,
      ),
    );
    return true;
  }

  /** Drops, unsent, the queued parts whose wait is over, and rejects them. */
  private dropExpired(address: string, q: OwnerQueue): void {
    const now = this.clock.elapsed();
    q.envoy = this.keepLive(address, q.envoy, now);
    q.checks = this.keepLive(address, q.checks, now);
  }

  /** `parts` whose deadline is still ahead, in order; the others rejected (a pass only when one is due). */
  private keepLive<P extends { deadline: number; callers: boolean; reject(e: Error): void }>(
    address: string,
    parts: P[],
    now: number,
  ): P[] {
    if (!parts.some((p) => p.deadline <= now)) return parts;
    const live: P[] = [];
    for (const p of parts) {
      if (p.deadline > now) live.push(p);
      else
        p.reject(
          new ForwardExpiredError(
            p.callers
              ? `its caller's deadline passed while it waited to be forwarded to ${address}: dropped unsent`
              : `waited over ${this.queueMs} ms to be forwarded to ${address}, past its deadline: dropped unsent`,
          ),
        );
    }
    return live;
  }

  private queue(address: string): OwnerQueue {
    let q = this.queues.get(address);
    if (!q) {
      q = new OwnerQueue();
      this.queues.set(address, q);
    }
    return q;
  }

  private schedule(address: string, q: OwnerQueue, generation: number): void {
    q.generation = Math.max(q.generation, generation);
    if (q.scheduled || q.inFlight >= this.maxInFlight) return;
    q.scheduled = true;
    setImmediate(() => {
      q.scheduled = false;
      this.flush(address, q);
    });
  }

  /**
   * One Forward call, sent again unchanged (same part ids) while it fails as a whole. Tracing on:
   * in a client span, child of the first caller's context and linked to the others', carried to
   * the owner in the call's metadata (W3C traceparent).
   */
  private send(
    address: string,
    req: ForwardRequest,
    deadlineMs: number,
    ctxs: readonly (Context | undefined)[],
  ): Promise<ForwardResponse> {
    const t = activeTracer();
    if (t === undefined) return this.sendAgain(address, req, deadlineMs);
    const callers = ctxs.filter((c) => c !== undefined);
    const attrs = {
      "shardlimit.owner": address,
      "shardlimit.checks": req.checks.length,
      "shardlimit.envoy": req.envoy.length,
    };
    return clientSpan(
      t,
      "shardlimit.forward",
      callers[0] ?? ROOT_CONTEXT,
      callers.slice(1),
      attrs,
      (_, ctx) => this.sendAgain(address, req, deadlineMs, metadataFor(ctx)),
    );
  }

  private async sendAgain(
    address: string,
    req: ForwardRequest,
    deadlineMs: number,
    metadata?: Metadata,
  ): Promise<ForwardResponse> {
    const resends = this.opts.resends ?? 2;
    for (let n = 0; ; n++) {
      try {
        return await this.opts
          .peer(address)
          .forward(req, metadata ? { deadlineMs, metadata } : { deadlineMs });
      } catch (err) {
        if (n >= resends) throw err;
      }
      await sleep(this.clock, this.opts.resendMs ?? 100);
    }
  }

  private flush(address: string, q: OwnerQueue): void {
    this.dropExpired(address, q);
    if (q.size === 0 && q.inFlight === 0) this.queues.delete(address);
    while (q.size > 0 && q.inFlight < this.maxInFlight) {
      // Parts in order until maxBatch parts or maxItems items; at least one part per call.
      let items = 0;
      let nEnvoy = 0;
      while (nEnvoy < q.envoy.length && nEnvoy < this.maxBatch) {
        const n = q.envoy[nEnvoy]!.req.descriptors.length;
        if (nEnvoy > 0 && items + n > this.maxItems) break;
        items += n;
        nEnvoy++;
      }
      let nChecks = 0;
      // Checks only once every queued Envoy part fits: parts keep their order per kind.
      while (nEnvoy === q.envoy.length && nChecks < q.checks.length && nEnvoy + nChecks < this.maxBatch) {
        const n = q.checks[nChecks]!.req.items.length;
        if (nEnvoy + nChecks > 0 && items + n > this.maxItems) break;
        items += n;
        nChecks++;
      }
      const envoyParts = q.envoy.splice(0, nEnvoy);
      const checkParts = q.checks.splice(0, nChecks);
      const req: ForwardRequest = {
        generation: q.generation,
        envoy: envoyParts.map((p) => p.req),
        checks: checkParts.map((p) => p.req),
        sender: this.sender,
        envoyIds: envoyParts.map((p) => p.id),
        checkIds: checkParts.map((p) => p.id),
        ...callers(
          "checkCallers",
          checkParts.map((p) => p.req),
        ),
      };
      q.inFlight++;
      const ctxs = activeTracer() === undefined ? [] : [...envoyParts, ...checkParts].map((p) => p.ctx);
      this.send(address, req, this.deadlineMs, ctxs)
        .then(
          (res) => {
            this.opts.onCall?.(address, nEnvoy + nChecks, true);
            for (let i = 0; i < envoyParts.length; i++) {
              const part = res.envoy[i];
              const err = part ? asError(part.error, res.generation) : new UnavailableError("no answer");
              if (err) envoyParts[i]!.reject(err);
              else envoyParts[i]!.resolve(part!.response ?? { overallCode: 0, statuses: [] });
            }
            for (let i = 0; i < checkParts.length; i++) {
              const answer = checkAnswer(res, i);
              if (answer instanceof Error) checkParts[i]!.reject(answer);
              else checkParts[i]!.resolve(answer);
            }
          },
          (err: Error) => {
            this.opts.onCall?.(address, nEnvoy + nChecks, false);
            const e = new ForwardLostError(`forwarding to ${address} failed: ${err.message}`, address);
            for (const p of envoyParts) p.reject(e);
            for (const p of checkParts) p.reject(e);
          },
        )
        .finally(() => {
          q.inFlight--;
          if (q.size > 0) this.flush(address, q);
          else if (q.inFlight === 0) this.queues.delete(address);
        });
    }
  }
}

/**
 * The identities parts are forwarded for (the callers this server authenticated), as the Forward
 * field `name`; nothing when no part has one (no authorisation file), so calls stay as they were.
 */
function callers<K extends "checkCallers" | "settleCallers">(
  name: K,
  parts: readonly { caller?: string }[],
): Partial<Record<K, string[]>> {
  if (!parts.some((p) => p.caller)) return {};
  return { [name]: parts.map((p) => p.caller ?? "") } as Partial<Record<K, string[]>>;
}
