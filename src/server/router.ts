import { poolShardKey } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import {
  ERRORS,
  InvalidArgumentError,
  NotOwnerError,
  ShardlimitError,
  UnavailableError,
} from "../core/errors.js";
import { ErrorCode, serverRetries } from "../protocol/item-errors.js";
import type {
  CheckRequest,
  CheckResponse,
  CheckResult,
  EnvoyDescriptorStatus,
  EnvoyRequest,
  EnvoyResponse,
  PoolReportRequest,
  PoolReportResponse,
  SettleRequest,
  SettleResponse,
} from "../protocol/messages.js";
import { type CallLike, type CheckWaits, capWaits, DEADLINE_MARGIN_MS, msLeft } from "./check-waits.js";
import type { EnvoyRateLimit } from "./envoy.js";
import type { EnvoyPlan } from "./envoy-plan.js";
import type { Limiter } from "./limiter.js";
import type { Owner, Ownership, Placed } from "./ownership.js";

/**
 * Passes calls on to the server that owns their keys. Rejects with `NotOwnerError` when the
 * receiver does not own them in its generation, `UnavailableError` when it cannot be reached.
 */
/**
 * Passes parts to their owners. `until` (on the clock's `elapsed()`) is when the caller stops
 * waiting: a part still unsent then is dropped, never charged for a caller that gave up.
 */
export interface Forwarder {
  envoy(owner: Owner, req: EnvoyRequest, generation: number, until?: number): Promise<EnvoyResponse>;
  check(owner: Owner, req: CheckRequest, generation: number, until?: number): Promise<CheckResponse>;
  /** A settle by ticket, to the owner that issued the ticket (absent: answered here). */
  settle?(owner: Owner, req: SettleRequest, generation: number): Promise<SettleResponse>;
  /** A pool backend's report, to the owner of the pool's key (absent: answered here). */
  reportPool?(owner: Owner, req: PoolReportRequest, generation: number): Promise<PoolReportResponse>;
}

/**
 * A forwarded call that failed as a whole after the forwarder's resends (deadline, connection):
 * its owner may have applied it. The router does not send those parts to that owner again under
 * a new id (that would charge them twice); it tries them again only where the key's owner changed.
 */
export class ForwardLostError extends UnavailableError {
  constructor(
    message: string,
    /** The address the call went to. */
    readonly address: string,
  ) {
    super(message);
  }
}

/**
 * Parts that waited past their deadline in the forwarder's queue and were dropped unsent (never
 * charged). Their caller has waited long already: the router answers them at once (OWNER_UNAVAILABLE
 * per item, UNAVAILABLE for ShouldRateLimit) rather than queueing them again.
 */
export class ForwardExpiredError extends UnavailableError {}

export interface RouterDeps {
  limiter: Limiter;
  envoy: EnvoyRateLimit;
  ownership: Ownership;
  /** Times the wait for a newer generation. */
  clock: Clock;
  /** Absent standalone: every key is decided here. */
  forwarder?: Forwarder;
  /** Tries per call when an owner answers `not owner`, is not ready, or cannot be reached. */
  attempts?: number;
  /** How long one retry waits for the assignment or readiness to change. */
  retryWaitMs?: number;
  /** Check items with max_wait_ms wait here (absent: they are decided at once). */
  waits?: CheckWaits;
}

/**
 * `ShouldRateLimit` and `Check` may reach any server: the keys this server owns are decided here,
 * the others are passed to their owners (batched per owner by the forwarder) and the answers
 * merged in order. Standalone, and whenever every key is local, the call stays synchronous.
 */
export class Router {
  private readonly attempts: number;
  private readonly retryWaitMs: number;

  constructor(private readonly deps: RouterDeps) {
    this.attempts = deps.attempts ?? 3;
    this.retryWaitMs = deps.retryWaitMs ?? 250;
  }

  /**
   * Whether a call tried `attempt` times (its items' slices being handed over, or their owner
   * unreachable) is tried again: `attempts` times, and beyond that, up to four times as many, while
   * its caller's deadline (`until`, on the clock's `elapsed()`) leaves a wait to spare. A handoff
   * takes milliseconds, but seconds on a loaded machine; a caller that gave a deadline of seconds
   * would rather wait for it than be failed after three quick tries (seen under load: Check calls
   * failing "being handed over" in a rebalance). Envoy's calls, with deadlines of milliseconds, are
   * answered as before.
   */
  private mayRetry(attempt: number, until: number | undefined): boolean {
    if (attempt < this.attempts) return true;
    return (
      until !== undefined &&
      attempt < this.attempts * 4 &&
      until - this.deps.clock.elapsed() > this.retryWaitMs
    );
  }

  /**
   * `fn` for a request routed with the generation it names: a request from a caller that knows a
   * newer assignment than this server waits (briefly) until this server has it too, so a server
   * whose view lags never serves keys it may no longer own in that generation.
   */
  caughtUp<Req extends { generation: number }, Res>(fn: (req: Req) => Res): (req: Req) => Res | Promise<Res> {
    if (this.deps.forwarder === undefined) return fn;
    const { ownership } = this.deps;
    return (req) => {
      if (!(req.generation > ownership.generation())) return fn(req);
      return this.waitFor(req.generation).then(() => fn(req));
    };
  }

  private async waitFor(generation: number): Promise<void> {
    const { ownership, clock } = this.deps;
    const until = clock.elapsed() + this.retryWaitMs * this.attempts;
    while (ownership.generation() < generation && clock.elapsed() < until) {
      await ownership.changed(until - clock.elapsed());
    }
  }

  check(req: CheckRequest, call?: CallLike): CheckResponse | Promise<CheckResponse> {
    const { forwarder, ownership, waits } = this.deps;
    if (forwarder === undefined) return this.decideHere(req, call);
    if (req.items.length === 0) throw new InvalidArgumentError("check has no items");
    // Waiting items are checked before anything is forwarded, and cut to this call's deadline
    // (less a margin), so their owner answers them before this server has to answer its caller.
    if (waits?.waits(req)) {
      req = capWaits(req, msLeft(call) - DEADLINE_MARGIN_MS);
    }
    if (req.generation > ownership.generation()) {
      return this.waitFor(req.generation).then(() => this.routeCheck(req, 1, call));
    }
    return this.routeCheck(req, 1, call);
  }

  /** When `call`'s caller stops waiting, on the clock's `elapsed()` (less the answer's margin). */
  private untilOf(call: CallLike | undefined): number | undefined {
    const left = msLeft(call);
    return Number.isFinite(left) ? this.deps.clock.elapsed() + left - DEADLINE_MARGIN_MS : undefined;
  }

  /** Decides `req` here: at once, or after waiting when its items ask to (`waits`). */
  private decideHere(req: CheckRequest, call?: CallLike): CheckResponse | Promise<CheckResponse> {
    const { waits, limiter } = this.deps;
    return waits === undefined ? limiter.check(req) : waits.check(req, call);
  }

  private routeCheck(
    req: CheckRequest,
    attempt: number,
    call?: CallLike,
  ): CheckResponse | Promise<CheckResponse> {
    const groups = this.groupCheck(req);
    if (groups === undefined) {
      const out = this.decideHere(req, call);
      // A check that waited is answered as it is (its items were decided, or it ran out of time).
      if (out instanceof Promise) return out;
      const res = out;
      if (
        !res.results.some((r) => r.error?.code === ErrorCode.SLICE_NOT_READY) ||
        !this.mayRetry(attempt, this.untilOf(call))
      )
        return res;
      return this.retryNotReady(req, res, attempt, call);
    }
    if (req.atomic) {
      if (groups.size > 1) {
        throw new InvalidArgumentError(
          "an atomic check names keys owned by different servers: limits decided together need one shard key (shard_key: true on the group)",
        );
      }
      const [owner] = [...groups.values()][0]!;
      return this.forwardWholeCheck(owner, req, attempt, call);
    }
    return this.splitCheck(req, groups, attempt, call);
  }

  /** Items by remote owner (key -> owner, positions); undefined when every item is local. */
  private groupCheck(req: CheckRequest): Map<string, [Owner, number[]]> | undefined {
    const { limiter, ownership } = this.deps;
    let groups: Map<string, [Owner, number[]]> | undefined;
    for (let i = 0; i < req.items.length; i++) {
      const shard = limiter.shardKeyOf(req.items[i]!.key);
      if (shard === undefined) continue; // invalid or no limit: answered here
      const owner = ownership.ownerOf(shard);
      if (owner === undefined || owner.self) continue; // not_owner/not_ready answered per item
      groups ??= new Map();
      const g = groups.get(owner.id);
      if (g) g[1].push(i);
      else groups.set(owner.id, [owner, [i]]);
    }
    return groups;
  }

  /**
   * Items whose slice is being handed over to this server are tried again once the handoff is in
   * (it takes milliseconds), rather than failing the caller. An atomic check applied nothing, so
   * it is tried again whole.
   */
  private async retryNotReady(
    req: CheckRequest,
    res: CheckResponse,
    attempt: number,
    call?: CallLike,
  ): Promise<CheckResponse> {
    await this.deps.ownership.changed(this.retryWaitMs);
    if (req.atomic) return this.routeCheck(req, attempt + 1, call);
    const again: number[] = [];
    for (let i = 0; i < res.results.length; i++) {
      if (res.results[i]!.error?.code === ErrorCode.SLICE_NOT_READY) again.push(i);
    }
    const sub = part(req, again, 0);
    const next = await this.routeCheck(sub, attempt + 1, call);
    const results = res.results.slice();
    for (let j = 0; j < again.length; j++) results[again[j]!] = next.results[j]!;
    return { generation: this.deps.ownership.generation(), results };
  }

  private async forwardWholeCheck(
    owner: Owner,
    req: CheckRequest,
    attempt: number,
    call?: CallLike,
  ): Promise<CheckResponse> {
    const { ownership, forwarder } = this.deps;
    let res: CheckResponse;
    let lost: string | undefined;
    try {
      res = await forwarder!.check(
        owner,
        { ...req, generation: ownership.generation() },
        ownership.generation(),
        this.untilOf(call),
      );
    } catch (err) {
      if (!(err instanceof NotOwnerError || err instanceof UnavailableError)) throw err;
      res = failAll(req, err);
      lost = err instanceof ForwardLostError ? owner.id : undefined;
      if (err instanceof ForwardExpiredError) return { ...res, generation: ownership.generation() };
    }
    if (
      res.results.some((r) => r.error && serverRetries(r.error.code)) &&
      this.mayRetry(attempt, this.untilOf(call))
    ) {
      await ownership.changed(this.retryWaitMs);
      // Not again to the owner that may have applied it (see ForwardLostError).
      if (lost === undefined || this.ownerIdOf(req.items[0]!.key) !== lost)
        return this.routeCheck(req, attempt + 1, call);
    }
    return { ...res, generation: ownership.generation() };
  }

  private async splitCheck(
    req: CheckRequest,
    groups: Map<string, [Owner, number[]]>,
    attempt: number,
    call?: CallLike,
  ): Promise<CheckResponse> {
    const { limiter, ownership, forwarder } = this.deps;
    const results: CheckResult[] = new Array(req.items.length);
    const remote = new Set<number>();
    for (const [, idx] of groups.values()) for (const i of idx) remote.add(i);
    const localIdx: number[] = [];
    for (let i = 0; i < req.items.length; i++) if (!remote.has(i)) localIdx.push(i);
    const generation = ownership.generation();
    const until = this.untilOf(call);
    // Positions whose call to this owner may have been applied (its answer was lost).
    const lostTo = new Map<number, string>();
    // Positions dropped unsent at their queue deadline: answered as they are.
    const expired = new Set<number>();
    const calls = [...groups.values()].map(async ([owner, idx]) => {
      const sub = part(req, idx, generation);
      let res: CheckResponse;
      try {
        res = await forwarder!.check(owner, sub, generation, until);
      } catch (err) {
        // A part that failed on its own (e.g. COUNTERS_EXHAUSTED) fails its items, not the call.
        if (!(err instanceof ShardlimitError && itemCode(err) !== undefined)) throw err;
        if (err instanceof ForwardLostError) for (const i of idx) lostTo.set(i, owner.id);
        if (err instanceof ForwardExpiredError) for (const i of idx) expired.add(i);
        res = failAll(sub, err);
      }
      for (let j = 0; j < idx.length; j++) results[idx[j]!] = res.results[j] ?? { error: missing() };
    });
    if (localIdx.length > 0) {
      const local = await this.decideHere(part(req, localIdx, generation));
      for (let j = 0; j < localIdx.length; j++) results[localIdx[j]!] = local.results[j]!;
    }
    await Promise.all(calls);
    const retry: number[] = [];
    for (let i = 0; i < results.length; i++) {
      const e = results[i]!.error;
      if (e && serverRetries(e.code) && !expired.has(i)) retry.push(i);
    }
    const tryAgain = retry.length > 0 && this.mayRetry(attempt, until);
    if (tryAgain) {
      await ownership.changed(this.retryWaitMs);
      if (lostTo.size > 0) {
        const stay = retry.filter((i) => {
          const lost = lostTo.get(i);
          return lost === undefined || this.ownerIdOf(req.items[i]!.key) !== lost;
        });
        retry.splice(0, retry.length, ...stay);
      }
    }
    if (retry.length > 0 && tryAgain) {
      const sub = part(req, retry, 0);
      const again = this.groupCheck(sub);
      const res =
        again === undefined ? limiter.check(sub) : await this.splitCheck(sub, again, attempt + 1, call);
      for (let j = 0; j < retry.length; j++) results[retry[j]!] = res.results[j]!;
    }
    return { generation: ownership.generation(), results };
  }

  /**
   * `Settle`: by ticket, to the owner of the ticket's key (which issued it), forwarded as a Check
   * is; the key + delta form, and any call whose key is this server's, is answered here. A
   * forwarded settle is not tried elsewhere: a ticket lives only on the server that issued it.
   */
  settle(req: SettleRequest): SettleResponse | Promise<SettleResponse> {
    const { limiter, forwarder, ownership } = this.deps;
    if (forwarder?.settle === undefined || !req.ticketId)
      return this.caughtUp(limiter.settle.bind(limiter))(req);
    const shard = limiter.shardKeyOf(req.key);
    const owner = shard === undefined ? undefined : ownership.ownerOf(shard);
    if (owner === undefined || owner.self) return this.caughtUp(limiter.settle.bind(limiter))(req);
    const generation = ownership.generation();
    return forwarder.settle(owner, { ...req, generation }, generation).catch((err: unknown) => {
      if (!(err instanceof ShardlimitError)) throw err;
      const code = itemCode(err) ?? ErrorCode.OWNER_UNAVAILABLE;
      return { error: { code, message: err.message }, generation: ownership.generation() };
    });
  }

  /**
   * `ReportPool`: to the owner of the pool's key (`pool/<name>`), forwarded as a settle is, so a
   * backend may report to any server (a Service in front of the cluster); the gateway client
   * routes it to the owner itself. Not tried again elsewhere: the backend's next report, ~100 ms
   * later, finds the new owner.
   */
  reportPool(req: PoolReportRequest): PoolReportResponse | Promise<PoolReportResponse> {
    const { limiter, forwarder, ownership } = this.deps;
    const here = this.caughtUp((r: PoolReportRequest) => limiter.reportPool(r));
    if (forwarder?.reportPool === undefined) return here(req);
    const owner = ownership.ownerOf(poolShardKey(req.pool ?? ""));
    if (owner === undefined || owner.self) return here(req);
    const generation = ownership.generation();
    return forwarder.reportPool(owner, { ...req, generation }, generation).catch((err: unknown) => {
      if (!(err instanceof ShardlimitError)) throw err;
      const code = itemCode(err) ?? ErrorCode.OWNER_UNAVAILABLE;
      return { error: { code, message: err.message }, generation: ownership.generation() };
    });
  }

  private ownerIdOf(key: string): string | undefined {
    const shard = this.deps.limiter.shardKeyOf(key);
    return shard === undefined ? undefined : this.deps.ownership.ownerOf(shard)?.id;
  }

  shouldRateLimit(req: EnvoyRequest, call?: CallLike): EnvoyResponse | Promise<EnvoyResponse> {
    const { envoy, forwarder } = this.deps;
    if (forwarder === undefined) return envoy.shouldRateLimit(req);
    const plan = envoy.plan(req);
    const split = this.splitEnvoy(plan);
    if (split.remote === undefined && split.waiting.length === 0) {
      return envoy.respond(plan, envoy.execute(plan, plan.limited));
    }
    return this.routeEnvoy(req, plan, split, 1, this.untilOf(call));
  }

  /** Positions in `plan.limited` decided here, waiting for a handoff here, or by remote owner. */
  private splitEnvoy(plan: EnvoyPlan, among: readonly number[] = range(plan.limited.length)) {
    const { ownership } = this.deps;
    const local: number[] = [];
    const waiting: number[] = [];
    let remote: Map<string, [Owner, number[]]> | undefined;
    for (const j of among) {
      const r = plan.active[plan.limited[j]!]!;
      // Hashed once for both questions (a hash costs more than the rest of this loop).
      const placed: Placed = { point: undefined };
      const owner = ownership.ownerOf(r.shardKey, placed);
      if (owner === undefined) {
        waiting.push(j);
      } else if (owner.self) {
        if (ownership.check(r.shardKey, placed) === "own") local.push(j);
        else waiting.push(j);
      } else {
        remote ??= new Map();
        const g = remote.get(owner.id);
        if (g) g[1].push(j);
        else remote.set(owner.id, [owner, [j]]);
      }
    }
    return { local, waiting, remote };
  }

  private async routeEnvoy(
    req: EnvoyRequest,
    plan: EnvoyPlan,
    first: ReturnType<Router["splitEnvoy"]>,
    attempt: number,
    until?: number,
  ): Promise<EnvoyResponse> {
    const { envoy, ownership, forwarder } = this.deps;
    const statuses: (EnvoyDescriptorStatus | undefined)[] = new Array(plan.limited.length);
    let split = first;
    let lastError: Error | undefined;
    // Positions whose call to this owner may have been applied (its answer was lost).
    const lostTo = new Map<number, string>();
    let expired = false;
    for (let n = attempt; ; n++) {
      if (split.local.length > 0) {
        const decided = envoy.execute(
          plan,
          split.local.map((j) => plan.limited[j]!),
        );
        for (let k = 0; k < split.local.length; k++) statuses[split.local[k]!] = decided[k];
      }
      const failed: number[] = [...split.waiting];
      const generation = ownership.generation();
      await Promise.all(
        [...(split.remote?.values() ?? [])].map(async ([owner, js]) => {
          const sub: EnvoyRequest = {
            domain: req.domain,
            hitsAddend: req.hitsAddend,
            // Each descriptor carries its own hits, so the owner charges what this server would.
            descriptors: js.map((j) => {
              const i = plan.limited[j]!;
              return { ...req.descriptors[i]!, hitsAddend: { value: plan.hits[i]! } };
            }),
          };
          try {
            const res = await forwarder!.envoy(owner, sub, generation, until);
            for (let k = 0; k < js.length; k++) statuses[js[k]!] = res.statuses[k];
          } catch (err) {
            if (!(err instanceof NotOwnerError || err instanceof UnavailableError)) throw err;
            lastError = err;
            if (err instanceof ForwardLostError) for (const j of js) lostTo.set(j, owner.id);
            if (err instanceof ForwardExpiredError) expired = true;
            failed.push(...js);
          }
        }),
      );
      if (failed.length === 0) break;
      if (expired || !this.mayRetry(n, until)) {
        throw new UnavailableError(
          `the owners of ${failed.length} descriptor(s) could not decide them: ${lastError?.message ?? "their slices are being handed over"}`,
        );
      }
      await ownership.changed(this.retryWaitMs);
      split = this.splitEnvoy(plan, failed);
      for (const [owner, js] of split.remote?.values() ?? []) {
        // Not again to the owner that may have applied them (see ForwardLostError).
        if (js.some((j) => lostTo.get(j) === owner.id)) throw lastError!;
      }
    }
    return envoy.respond(plan, statuses as EnvoyDescriptorStatus[]);
  }
}

/** The items of `req` at `positions`, as a non-atomic check of their own (ticket options kept). */
function part(req: CheckRequest, positions: readonly number[], generation: number): CheckRequest {
  const sub: CheckRequest = { items: positions.map((i) => req.items[i]!), atomic: false, generation };
  if (req.ticketTimeoutMs) sub.ticketTimeoutMs = req.ticketTimeoutMs;
  if (req.caller !== undefined) sub.caller = req.caller; // the taker of its tickets
  if (req.explain) sub.explain = true;
  return sub;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function missing() {
  return { code: ErrorCode.OWNER_UNAVAILABLE, message: "the owner's answer had no result for this item" };
}

/** The per-item code for a forwarded part's error: its own wire code, else OWNER_UNAVAILABLE. */
function itemCode(err: ShardlimitError): ErrorCode | undefined {
  if (err instanceof UnavailableError) return ErrorCode.OWNER_UNAVAILABLE;
  if (err instanceof InvalidArgumentError) return ErrorCode.INVALID_KEY;
  const spec = ERRORS[err.code];
  return "wire" in spec ? (spec.wire as ErrorCode) : undefined;
}

function failAll(req: CheckRequest, err: Error): CheckResponse {
  const code =
    err instanceof ShardlimitError
      ? (itemCode(err) ?? ErrorCode.OWNER_UNAVAILABLE)
      : ErrorCode.OWNER_UNAVAILABLE;
  return { generation: 0, results: req.items.map(() => ({ error: { code, message: err.message } })) };
}
