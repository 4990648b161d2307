import { resolveKey } from "../config/config.js";
import type { LimitConfig } from "../config/types.js";
import { DEFAULT_MAX_CLIENTS_PER_KEY } from "../core/clients.js";
import { type Clock, systemClock } from "../core/clock.js";
import { ERRORS, InvalidArgumentError, ShardlimitError } from "../core/errors.js";
import { poolTransferProblem } from "../core/pool.js";
import { type CounterSnapshot, snapshotProblem } from "../core/transfer.js";
import { DEFAULT_INPUT_LIMITS, type InputLimits, keyProblem } from "../protocol/input-limits.js";
import { ErrorCode, type ItemError, itemError } from "../protocol/item-errors.js";
import type {
  CheckRequest,
  CheckResponse,
  ForwardedEnvoy,
  ForwardRequest,
  ForwardResponse,
  HandoffRequest,
  HandoffResponse,
  PointRange,
  PoolReportResponse,
  ReclaimRequest,
  ReclaimResponse,
  ReplicateRequest,
  ReplicateResponse,
  SettleResponse,
  StandbyRequest,
  StandbyResponse,
} from "../protocol/messages.js";
import type { CallLike, CheckWaits } from "./check-waits.js";
import type { EnvoyRateLimit } from "./envoy.js";
import type { Limiter } from "./limiter.js";
import type { Ownership } from "./ownership.js";
import { checkId } from "./request-bounds.js";

export interface PeerServiceDeps {
  limiter: Limiter;
  envoy: EnvoyRateLimit;
  ownership: Ownership;
  receiveHandoff: (req: HandoffRequest) => HandoffResponse;
  /** A valid Reclaim (the cluster node decides whether to surrender the ranges). */
  reclaim?: (req: ReclaimRequest) => ReclaimResponse;
  /** A valid Replicate (the cluster node decides whether it is the sender's buddy). */
  replicate?: (req: ReplicateRequest) => ReplicateResponse;
  /** A valid Standby (the cluster node answers from its store of copies). */
  standby?: (req: StandbyRequest) => StandbyResponse;
  /** How long a forwarded call from a server on a newer generation waits for this one to catch up. */
  catchUpMs?: number;
  /**
   * Forwarded checks with max_wait_ms wait here, within the Forward call's deadline (the
   * forwarding server gives such a part a call of its own, with a deadline past the wait).
   */
  waits?: CheckWaits;
  /** Times the memory of answered parts. */
  clock?: Clock;
  /** Most answered parts remembered (oldest forgotten first). */
  rememberParts?: number;
  /** How long an answered part is remembered: longer than a sender's resends take. */
  rememberMs?: number;
  /** Bounds on a Forward or Handoff request (maxBatch, maxForwardItems, maxHandoffCounters...). */
  limits?: InputLimits;
}

/** Pools one handoff may carry (a config defines a few). */
const MAX_HANDOFF_POOLS = 1000;

const NO_ERROR: ItemError = { code: 0 as ItemError["code"], message: "" };

/**
 * One part's failure as its per-item error. Any error of the table with a wire code (NOT_OWNER,
 * COUNTERS_EXHAUSTED...) fails that part alone: throwing would fail the whole call, and the sender
 * would try every other part of the batch again although they were applied.
 */
function partError(err: unknown): ItemError {
  if (err instanceof InvalidArgumentError) return { code: ErrorCode.INVALID_KEY, message: err.message };
  if (err instanceof ShardlimitError) {
    const spec = ERRORS[err.code];
    if ("wire" in spec) return itemError(spec.wire, err.message);
  }
  throw err;
}

type Answer = { envoy: ForwardedEnvoy } | { check: CheckResponse; error: ItemError };

/** The owner's side of server-to-server calls: forwarded parts are decided as if sent here. */
export class PeerService {
  /** Answered parts by sender and part id, oldest first (a Map keeps insertion order). */
  private readonly answered = new Map<string, { at: number; answer: Answer | Promise<Answer> }>();

  constructor(private readonly deps: PeerServiceDeps) {}

  /**
   * A part's remembered answer, or `fn`'s (then remembered). A sender sends a call again only
   * when it got no answer, so a repeat means "the first answer was lost": it is answered the same
   * and charges nothing.
   */
  private once(
    sender: string | undefined,
    id: number | undefined,
    fn: () => Answer | Promise<Answer>,
  ): Answer | Promise<Answer> {
    if (!sender || !id) return fn(); // a sender of an older version: no ids
    const clock = this.deps.clock ?? systemClock;
    const now = clock.now();
    const maxAge = this.deps.rememberMs ?? 30_000;
    const maxParts = this.deps.rememberParts ?? 20_000;
    for (const [k, v] of this.answered) {
      if (now - v.at < maxAge && this.answered.size < maxParts) break;
      this.answered.delete(k);
    }
    const key = `${sender}/${id}`;
    const seen = this.answered.get(key);
    if (seen) return seen.answer;
    const answer = fn();
    this.answered.set(key, { at: now, answer });
    return answer;
  }

  /** One forwarded check, decided as if sent here: at once, or after waiting when it asks to. */
  private checkPart(part: CheckRequest, call: CallLike | undefined): Answer | Promise<Answer> {
    const { limiter, ownership, waits } = this.deps;
    const failed = (err: unknown): Answer => ({
      check: { generation: ownership.generation(), results: [] },
      error: partError(err),
    });
    try {
      const out = waits === undefined ? limiter.check(part) : waits.check(part, call);
      if (!(out instanceof Promise)) return { check: out, error: NO_ERROR };
      return out.then((check) => ({ check, error: NO_ERROR }), failed);
    } catch (err) {
      return failed(err);
    }
  }

  private get limits(): InputLimits {
    return this.deps.limits ?? DEFAULT_INPUT_LIMITS;
  }

  /** Refuses, whole and before anything is applied, a Forward over the bounds. */
  private checkForward(req: ForwardRequest): void {
    const limits = this.limits;
    const parts =
      req.envoy.length + req.checks.length + (req.settles?.length ?? 0) + (req.pools?.length ?? 0);
    if (parts > limits.maxBatch) {
      throw new InvalidArgumentError(
        `forward has ${parts} parts, over the maximum of maxBatch ${limits.maxBatch}`,
      );
    }
    let items = 0;
    for (const p of req.envoy) items += p.descriptors?.length ?? 0;
    for (const p of req.checks) items += p.items?.length ?? 0;
    if (items > limits.maxForwardItems) {
      throw new InvalidArgumentError(
        `forward has ${items} items in its parts, over the maximum of maxForwardItems ${limits.maxForwardItems}`,
      );
    }
    if (req.sender !== undefined && req.sender.length > limits.maxIdLength) {
      throw new InvalidArgumentError(
        `forward sender is ${req.sender.length} long, over the maximum of maxIdLength ${limits.maxIdLength}`,
      );
    }
  }

  async forward(req: ForwardRequest, call?: CallLike): Promise<ForwardResponse> {
    this.checkForward(req);
    const { envoy, ownership } = this.deps;
    if (req.generation > ownership.generation()) await ownership.changed(this.deps.catchUpMs ?? 300);
    const envoyOut: ForwardedEnvoy[] = req.envoy.map((part, i) => {
      const a = this.once(req.sender, req.envoyIds?.[i], () => {
        try {
          return { envoy: { response: envoy.shouldRateLimit(part, true) } };
        } catch (err) {
          return { envoy: { error: partError(err) } };
        }
      });
      return !(a instanceof Promise) && "envoy" in a ? a.envoy : { error: NO_ERROR };
    });
    const checks: CheckResponse[] = [];
    const checkErrors: ItemError[] = [];
    /** Parts that wait (max_wait_ms): answered into their slots once decided. */
    const waiting: Promise<void>[] = [];
    for (let i = 0; i < req.checks.length; i++) {
      const part = onBehalf(req.checks[i]!, req.checkCallers?.[i]);
      // A resend of a part still waiting gets the same promise: it is decided (and charged) once.
      const a = this.once(req.sender, req.checkIds?.[i], () => this.checkPart(part, call));
      if (a instanceof Promise) {
        const slot = checks.length;
        checks.push({ generation: 0, results: [] });
        checkErrors.push(NO_ERROR);
        waiting.push(
          a.then((x) => {
            if ("check" in x) {
              checks[slot] = x.check;
              checkErrors[slot] = x.error;
            }
          }),
        );
      } else if ("check" in a) {
        checks.push(a.check);
        checkErrors.push(a.error);
      }
    }
    // Settles by ticket are idempotent themselves (a ticket keeps its first answer).
    const settles: SettleResponse[] = (req.settles ?? []).map((part, i) => {
      try {
        return this.deps.limiter.settle(onBehalf(part, req.settleCallers?.[i]));
      } catch (err) {
        return { error: partError(err), generation: ownership.generation() };
      }
    });
    // Pool reports keep the latest value per backend: a resend changes nothing twice.
    const pools: PoolReportResponse[] = (req.pools ?? []).map((part) => {
      try {
        return this.deps.limiter.reportPool(part);
      } catch (err) {
        return { error: partError(err), generation: ownership.generation() };
      }
    });
    if (waiting.length > 0) await Promise.all(waiting);
    return {
      generation: ownership.generation(),
      envoy: envoyOut,
      checks,
      checkErrors,
      settles,
      ...(pools.length > 0 ? { pools } : {}),
    };
  }

  /**
   * Counters of a Handoff or Replicate, refused whole past the bounds on counters per call and,
   * per counter, clients and leases: a sender on the same bounds never sends more.
   */
  private checkCounters(what: string, counters: readonly CounterSnapshot[]): void {
    const limits = this.limits;
    if (counters.length > limits.maxHandoffCounters) {
      throw new InvalidArgumentError(
        `${what} has ${counters.length} counters, over the maximum of maxHandoffCounters ${limits.maxHandoffCounters}`,
      );
    }
    for (const c of counters) {
      if ((c.clients?.length ?? 0) > DEFAULT_MAX_CLIENTS_PER_KEY) {
        throw new InvalidArgumentError(
          `${what} counter ${JSON.stringify(c.key.slice(0, 100))} has ${c.clients.length} clients, over the maximum of ${DEFAULT_MAX_CLIENTS_PER_KEY} per key`,
        );
      }
      if ((c.leases?.length ?? 0) > limits.maxLeasesPerKey) {
        throw new InvalidArgumentError(
          `${what} counter ${JSON.stringify(c.key.slice(0, 100))} has ${c.leases.length} leases, over the maximum of maxLeasesPerKey ${limits.maxLeasesPerKey}`,
        );
      }
    }
  }

  /**
   * A handoff chunk, refused whole (nothing installed) past the bounds on counters per chunk and,
   * per counter, clients and leases: a sender on the same bounds never sends more.
   */
  handoff(req: HandoffRequest): HandoffResponse {
    this.checkCounters("handoff", req.counters);
    const pools = req.pools ?? [];
    if (pools.length > MAX_HANDOFF_POOLS) {
      throw new InvalidArgumentError(
        `handoff has ${pools.length} pools, over the maximum of ${MAX_HANDOFF_POOLS}`,
      );
    }
    for (const p of pools) {
      const problem = poolTransferProblem(p);
      if (problem !== undefined) {
        throw new InvalidArgumentError(
          `handoff from ${JSON.stringify(req.from.slice(0, 128))}: pool ${JSON.stringify(String(p.name).slice(0, 100))}: ${problem}; nothing of the chunk was taken`,
        );
      }
    }
    const config = this.deps.limiter.config;
    for (const c of req.counters) {
      const problem = handoffCounterProblem(c, config, this.limits);
      if (problem !== undefined) {
        throw new InvalidArgumentError(
          `handoff from ${JSON.stringify(req.from.slice(0, 128))}: counter ${JSON.stringify(c.key.slice(0, 100))}: ${problem}; nothing of the chunk was taken`,
        );
      }
    }
    return this.deps.receiveHandoff(req);
  }

  /**
   * A new owner asking for the counters of ranges it was given from this server without a
   * handoff: refused whole (nothing changes here) when malformed.
   */
  reclaim(req: ReclaimRequest): ReclaimResponse {
    checkId(this.limits, "reclaim from", req.from);
    const problem = reclaimProblem(req);
    if (problem !== undefined) throw new InvalidArgumentError(`reclaim: ${problem}`);
    if (!this.deps.reclaim) return { generation: this.deps.ownership.generation(), error: NOT_MEMBER };
    return this.deps.reclaim(req);
  }

  /**
   * Standby copies from a member: refused whole (nothing stored) when any field is malformed. A
   * copy is kept, not applied, so unlike a handoff's counters each must be restorable as sent.
   */
  replicate(req: ReplicateRequest): ReplicateResponse {
    const limits = this.limits;
    checkId(limits, "replicate from", req.from);
    if (!(Number.isInteger(req.generation) && req.generation > 0))
      throw new InvalidArgumentError("replicate: generation must be positive");
    this.checkCounters("replicate", req.counters);
    for (const c of req.counters) {
      const problem =
        keyProblem(c.key, limits) ??
        (c.shard.length > limits.maxKeyLength ? "shard key too long" : undefined);
      const bad = problem ?? snapshotProblem(c);
      if (bad !== undefined)
        throw new InvalidArgumentError(`replicate counter ${JSON.stringify(c.key.slice(0, 100))}: ${bad}`);
    }
    if (!this.deps.replicate)
      return { accepted: 0, generation: this.deps.ownership.generation(), error: NOT_MEMBER };
    return this.deps.replicate(req);
  }

  /** A new owner asking for a dead member's standby copies: refused whole when malformed. */
  standby(req: StandbyRequest): StandbyResponse {
    checkId(this.limits, "standby of", req.of);
    if (!(Number.isInteger(req.generation) && req.generation > 0))
      throw new InvalidArgumentError("standby: generation must be positive");
    const problem = rangesProblem(req.ranges);
    if (problem !== undefined) throw new InvalidArgumentError(`standby: ${problem}`);
    if (!(Number.isInteger(req.offset) && req.offset >= 0))
      throw new InvalidArgumentError(`standby: offset ${req.offset} is not a whole number`);
    if (!this.deps.standby)
      return { counters: [], nextOffset: 0, generation: this.deps.ownership.generation(), error: NOT_MEMBER };
    return this.deps.standby(req);
  }
}

/**
 * What is wrong with a handed-over counter by the receiver's own rules, if anything: the algorithm
 * its config resolves for the key, finite numbers, counts not negative, a token bucket not over its
 * burst, a window start (or last refill) not in the future, gateways and leases within bounds.
 */
export function handoffCounterProblem(
  c: CounterSnapshot,
  config: LimitConfig,
  limits: InputLimits,
): string | undefined {
  const bad = keyProblem(c.key, limits) ?? snapshotProblem(c);
  if (bad !== undefined) return bad;
  if (c.shard.length > limits.maxKeyLength) return "shard key too long";
  const r = resolveKey(config, c.key);
  if (typeof r === "string") return r;
  if (r === undefined) return "no limit of this server's config applies to its key";
  const rule = r.parent !== undefined && r.parent.counterKey === c.key ? r.parent.rule : r.rule;
  if (rule.algorithm !== c.algorithm)
    return `its algorithm is ${c.algorithm}, but this server's config gives ${rule.id} the ${rule.algorithm} algorithm`;
  if (c.tRelMs > 0) return `its window start (t) is ${c.tRelMs} ms in the future`;
  if (c.algorithm === "token_bucket") {
    if (c.x > rule.burst) return `its bucket holds ${c.x} tokens, over the burst of ${rule.burst}`;
  } else if (c.x < 0 || c.y < 0) return `a count is negative (x ${c.x}, y ${c.y})`;
  if (Math.abs(c.x) > Number.MAX_SAFE_INTEGER || Math.abs(c.y) > Number.MAX_SAFE_INTEGER)
    return "a count is beyond 2^53";
  for (const l of c.leases) {
    if (l.amount > limits.maxAmount)
      return `lease ${JSON.stringify(l.id.slice(0, 100))} holds over maxAmount`;
    if (l.expiresInMs > limits.maxLeaseTimeoutMs)
      return `lease ${JSON.stringify(l.id.slice(0, 100))} expires past maxLeaseTimeoutMs`;
  }
  for (const g of c.clients) {
    if (
      !(
        Number.isFinite(g.demand) &&
        Number.isFinite(g.held) &&
        g.seenMsAgo >= 0 &&
        Number.isFinite(g.seenMsAgo)
      )
    )
      return `gateway ${JSON.stringify(g.id.slice(0, 100))} has a number that is negative or not finite`;
  }
  return undefined;
}

/**
 * A forwarded part with the identity it is forwarded for (the taker of its tickets): members are
 * trusted to say it, and only members reach this service under an authorisation file.
 */
function onBehalf<T extends { caller?: string }>(part: T, caller: string | undefined): T {
  if (caller) part.caller = caller;
  else delete part.caller;
  return part;
}

const NOT_MEMBER = itemError(ErrorCode.NOT_OWNER, "this server is not a cluster member");

/** At most this many ranges in one Reclaim or Standby: an assignment has far fewer slices. */
export const MAX_RECLAIM_RANGES = 65_536;

/** What is wrong with a Reclaim request, if anything. */
function reclaimProblem(req: ReclaimRequest): string | undefined {
  if (!(req.generation > 0)) return "generation must be positive";
  if (!/^[^\s/]+:\d{1,5}$/.test(req.address) || req.address.length > 300)
    return `address ${JSON.stringify(req.address.slice(0, 100))} is not host:port`;
  return rangesProblem(req.ranges);
}

/** What is wrong with the ranges of a Reclaim or Standby request, if anything. */
function rangesProblem(ranges: readonly PointRange[]): string | undefined {
  if (ranges.length === 0) return "no ranges";
  if (ranges.length > MAX_RECLAIM_RANGES)
    return `${ranges.length} ranges, over the maximum of ${MAX_RECLAIM_RANGES}`;
  for (const r of ranges) {
    if (
      !(
        Number.isInteger(r.start) &&
        Number.isInteger(r.end) &&
        r.start >= 0 &&
        r.start < r.end &&
        r.end <= 2 ** 32
      )
    )
      return `range [${r.start}, ${r.end}) is not within [0, 2^32) with start < end`;
  }
  return undefined;
}
