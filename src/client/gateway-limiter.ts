import { randomBytes } from "node:crypto";
import {
  DEFAULT_PRIORITY,
  type LimitConfig,
  type LimitRule,
  type Priority,
  poolShardKey,
} from "../config/types.js";
import { windowStart } from "../core/algorithms/types.js";
import type { Clock, Timer } from "../core/clock.js";
import { InvalidArgumentError, NotReadyError } from "../core/errors.js";
import { type Policy, PolicyKind, policyKindName } from "../core/policy.js";
import { keyPoint } from "../keyspace/hash.js";
import { DEFAULT_INPUT_LIMITS } from "../protocol/input-limits.js";
import { errorFromItem } from "../protocol/item-errors.js";
import type { PoolReportResponse } from "../protocol/messages.js";
import { ClientKey } from "./client-key.js";
import { Directory } from "./directory.js";
import { HostGuard, type HostGuardOptions } from "./host-guard.js";
import { checkCost, type Descriptor, type Entry, KeyTable, withPriority } from "./key-table.js";
import { Reporter } from "./reporter.js";
import { Ticket } from "./ticket.js";
import type { ClientTransport, LimiterLogger } from "./transport.js";
import { checkWaitOptions, Waiters, type WaitOptions } from "./waiters.js";

export type { Priority } from "../config/types.js";
export type { GaugeSignal, HostGuardOptions, HostGuardState, LoadSignal } from "./host-guard.js";
export { HostGuard } from "./host-guard.js";
export type { Descriptor } from "./key-table.js";
export { Ticket } from "./ticket.js";
export type { LimiterLogger } from "./transport.js";
export type { WaitOptions } from "./waiters.js";

export interface GatewayLimiterOptions {
  /** Servers to learn the limits and the assignment from (host:port); any one of them will do. */
  servers: readonly string[];
  /** Names this gateway to the owners: their fair shares and dedup are per client id. */
  clientId: string;
  /**
   * This process's part of the client id on the wire (`<clientId>/<instanceId>`; default 8
   * random hex digits), so two processes configured with the same `clientId` (replicas, or a
   * restart with the wall clock set back) never share a fair share or a dedup window. Set it only
   * to make a simulation repeatable.
   */
  instanceId?: string;
  transport: ClientTransport;
  /** Close `transport` with the limiter (default false: a transport passed in may be shared). */
  closeTransport?: boolean;
  clock: Clock;
  reportIntervalMs?: number;
  /** A report unanswered this long counts as failed; its keys fall back to a local share. */
  reportTimeoutMs?: number;
  /** How often the assignment is fetched even when nothing suggests it changed. */
  viewRefreshMs?: number;
  /** Keys unused this long are forgotten (their counts reported first). */
  idleKeyMs?: number;
  /** Counters tracked at most; the least recently used idle ones go first. */
  maxKeys?: number;
  /** Entries per report; the rest wait for the next interval. */
  maxReportEntries?: number;
  /** What `decide` answers before the limits are known: admit (default) or reject. */
  beforeReady?: "open" | "closed";
  /**
   * Re-send window-to-date totals to a key's new owner (default true), so an owner that replaced
   * a crashed one rebuilds the counts. Off only to measure what it is worth.
   */
  resendWindowTotals?: boolean;
  /** For REJECT_FRACTION; seeded in simulations. */
  random?: () => number;
  logger?: LimiterLogger;
  /** Callers `wait` may hold on one counter at once (default 1000); past it `wait` rejects. */
  maxWaitersPerKey?: number;
  /** Callers `wait` may hold over all counters (default 10000). */
  maxWaiters?: number;
  /**
   * Sheds requests, lowest priority class first, while the host's own load (CPU, event-loop
   * delay, the application's gauges) is past a threshold; decided locally (`host-guard.ts`).
   */
  hostGuard?: HostGuardOptions;
  /** Called with the counter key each time the owner's policy for it arrives (RLQS pushes it on). */
  onPolicy?: (counterKey: string) => void;
}

const silent: LimiterLogger = { warn() {}, info() {} };

export interface LimiterStats {
  keys: number;
  fallbackKeys: number;
  reportsSent: number;
  reportsFailed: number;
  /** Reports an owner refused as older than its dedup window; their counts were sent again. */
  reportsTooOld: number;
  /** Units decided since start, counted as they are taken into reports. */
  unitsAdmitted: number;
  unitsRejected: number;
  generation: number;
  configVersion: string;
}

/** `GatewayLimiter.inspect`: a key as this gateway decides it now. */
export interface GatewayInspection {
  rule: string;
  /** `fallback`, `allowance` (no policy in force), or the owner's policy in force (`GRANT`...). */
  state: string;
  /** Why requests are admitted or rejected here, in words. */
  why: string;
  /** The owner's last figures: units left cluster-wide, and ms until the counter is full again. */
  remaining: number;
  resetMs: number;
  admittedSinceReport: number;
  rejectedSinceReport: number;
}

/** A gateway's inspection in words (the sidecar's `/inspect`). */
export function formatGatewayInspection(x: GatewayInspection): string {
  return [
    `rule        ${x.rule}`,
    `state       ${x.state}`,
    `why         ${x.why}`,
    `owner said  ${x.remaining} left, full again in ${x.resetMs} ms`,
    `since last report: ${x.admittedSinceReport} admitted, ${x.rejectedSinceReport} rejected here`,
    "",
  ].join("\n");
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/**
 * The gateway side of batched mode. `decide` runs on every request with no I/O: it applies the
 * owner's latest policy for the key (or a small optimistic allowance, or a fallback share).
 * Every `reportIntervalMs` the counts go, one report per owner, to the servers that own the keys,
 * and each answer brings the next policies. Keys are resolved with the servers' own limit
 * configuration (fetched with GetLimits), so a gateway knows a key's rule, counter and owner
 * without asking.
 *
 * This class is the request path and the report loop's clock; the work is done by its parts:
 * the key table (keys to counters, under the limits in force), the reporter (reports per owner
 * and their answers) and the directory (the assignment and the limits, and readiness).
 */
export class GatewayLimiter {
  private readonly opts: Required<Omit<GatewayLimiterOptions, "logger" | "hostGuard" | "onPolicy">> & {
    logger: LimiterLogger;
    onPolicy?: (counterKey: string) => void;
  };
  /** The host guard, when `hostGuard` was given: consulted before every decision. */
  readonly guard: HostGuard | undefined;
  private readonly keys: KeyTable;
  private readonly reporter: Reporter;
  private readonly directory: Directory;
  private timer: Timer | undefined;
  private closed = false;
  /** Callers of `wait`, queued per counter key. */
  private readonly waiters: Waiters<string | Descriptor>;

  constructor(options: GatewayLimiterOptions) {
    if (options.servers.length === 0) throw new InvalidArgumentError("servers is empty: name at least one");
    if (options.clientId === "") throw new InvalidArgumentError("clientId is empty");
    const instanceId = options.instanceId ?? randomBytes(4).toString("hex");
    const idLength = options.clientId.length + 1 + instanceId.length;
    if (idLength > DEFAULT_INPUT_LIMITS.maxIdLength) {
      throw new InvalidArgumentError(
        `clientId is ${options.clientId.length} long: with "/${instanceId}" appended that is over the servers' default maximum of ${DEFAULT_INPUT_LIMITS.maxIdLength}`,
      );
    }
    const interval = options.reportIntervalMs ?? 100;
    if (!(interval >= 1 && interval <= 60_000)) {
      throw new InvalidArgumentError(`reportIntervalMs must be 1..60000, got ${interval}`);
    }
    const o = {
      reportIntervalMs: interval,
      // Short enough that one lost message is retried before the policies in force (three
      // intervals long) run out.
      reportTimeoutMs: options.reportTimeoutMs ?? Math.max(200, 2 * interval),
      viewRefreshMs: options.viewRefreshMs ?? 5_000,
      idleKeyMs: options.idleKeyMs ?? 60_000,
      maxKeys: options.maxKeys ?? 100_000,
      maxReportEntries: options.maxReportEntries ?? 10_000,
      beforeReady: options.beforeReady ?? "open",
      resendWindowTotals: options.resendWindowTotals ?? true,
      closeTransport: options.closeTransport ?? false,
      random: options.random ?? Math.random,
      logger: options.logger ?? silent,
      servers: options.servers,
      clientId: options.clientId,
      instanceId,
      transport: options.transport,
      clock: options.clock,
      maxWaitersPerKey: options.maxWaitersPerKey ?? 1_000,
      maxWaiters: options.maxWaiters ?? 10_000,
      onPolicy: options.onPolicy,
    };
    for (const f of ["maxWaitersPerKey", "maxWaiters"] as const) {
      if (!(Number.isSafeInteger(o[f]) && o[f] >= 1)) {
        throw new InvalidArgumentError(`${f} must be a positive integer, got ${o[f]}`);
      }
    }
    this.opts = o;
    this.guard = options.hostGuard ? new HostGuard(options.hostGuard, o.clock) : undefined;
    this.waiters = new Waiters(
      { clock: o.clock, maxPerKey: o.maxWaitersPerKey, maxTotal: o.maxWaiters },
      (key, cost) => this.admitWaiter(key, cost),
    );
    // The parts call each other only through these ports (arrows: `reporter` is made last).
    this.keys = new KeyTable(o, (k) => this.reporter.markDirty(k));
    this.directory = new Directory(o, {
      limits: this.keys,
      isDown: (address) => this.reporter.isDown(address),
      membersChanged: (members) => this.reporter.membersChanged(members),
    });
    this.reporter = new Reporter(o, {
      isCurrent: (k) => this.keys.isCurrent(k),
      directory: this.directory,
      wake: () => this.tick(true),
      policyApplied: (k) => this.policyArrived(k),
    });
  }

  /** Starts fetching the limits and the assignment, and the report loop. */
  start(): void {
    this.guard?.start();
    this.directory.refreshLimits();
    this.directory.refreshView(true);
    // Gateways started together should not all report in the same instant.
    this.arm(this.opts.random() * this.opts.reportIntervalMs);
  }

  /** The limits in force (the servers' configuration); undefined until fetched. */
  limitConfig(): LimitConfig | undefined {
    return this.keys.config;
  }

  /** What requests get before the limits are known (`beforeReady`). */
  get admitsBeforeReady(): boolean {
    return this.opts.beforeReady === "open";
  }

  get ready(): boolean {
    return this.directory.ready;
  }

  /** Resolves once the limits and the assignment are known; rejects after `timeoutMs`. */
  whenReady(timeoutMs: number): Promise<void> {
    return this.directory.whenReady(timeoutMs);
  }

  /** Swaps in new limits: keys are resolved again on next use; counts carry over. */
  setConfig(config: LimitConfig): void {
    this.directory.setConfig(config);
  }

  get reportsSent(): number {
    return this.reporter.reportsSent;
  }

  get reportsFailed(): number {
    return this.reporter.reportsFailed;
  }

  // ---- the request path -------------------------------------------------------------------

  /**
   * Admits or rejects one request of `cost` units (1 by default; tokens, inference units...).
   * Synchronous and local. Throws InvalidArgumentError for a malformed key or cost.
   * `hostGuard: false` skips the host guard: for a caller that asked it once for a whole request
   * of several keys (the Envoy sidecar), so that the request is not shed once per key.
   */
  decide(
    key: string | Descriptor,
    cost = 1,
    options?: { priority?: Priority; hostGuard?: boolean },
  ): boolean {
    const p = options?.priority;
    const e = this.keys.entry(p === undefined || p === DEFAULT_PRIORITY ? key : withPriority(key, p), cost);
    if (options?.hostGuard !== false && !this.guardAdmits(e, p)) return false;
    return this.decideEntry(e, cost);
  }

  /**
   * The host guard's answer for a request (true without a guard). Its class is the `priority`
   * option, else the one its key names. A shed request is not counted on any limit: it is the
   * host's load, not the key's demand.
   */
  private guardAdmits(e: Entry | undefined, p?: Priority): boolean {
    if (this.guard === undefined) return true;
    return this.guard.admit(p ?? e?.priority ?? DEFAULT_PRIORITY, this.opts.random());
  }

  /** `decide` once the key is resolved and the host guard let it through. */
  private decideEntry(e: Entry | undefined, cost: number): boolean {
    if (e === undefined) return this.opts.beforeReady === "open";
    const now = this.opts.clock.now();
    e.touch(now);
    if (!(e instanceof ClientKey)) return true;
    this.reporter.markDirty(e);
    const rule = e.rule;
    if (rule.algorithm === "concurrency") {
      throw new InvalidArgumentError(`${rule.id} is a concurrency limit: use acquire and release`);
    }
    // Shadow mode: counted and reported, never rejected.
    if (rule.shadowMode) return e.tally(true, cost);
    if (cost > rule.limit + (rule.algorithm === "token_bucket" ? rule.burst : 0)) {
      // More than the limit could ever admit at once (as envoyproxy/ratelimit rejects it).
      return e.tally(false, cost);
    }
    if (e.inFallback) return e.decideFallback(cost, now, this.opts.random());
    if (!e.hasPolicy(now)) this.reporter.reportSoon(now);
    const ok = e.decide(cost, now, this.opts.random());
    if (e.askEarly(ok, now, this.opts.reportIntervalMs)) this.reporter.reportSoon(now);
    return ok;
  }

  /**
   * Like `decide`, but waits up to `opts.timeoutMs` for the units instead of failing: resolves
   * true once admitted, false at the timeout or when `opts.signal` aborts (it never rejects for
   * those; it rejects with InvalidArgumentError for a malformed key, cost or timeout, and with
   * CapacityError past `maxWaitersPerKey` or `maxWaiters`). Callers wait FIFO per counter: one
   * is admitted only after every caller before it on that counter was, woken when the owner's
   * next policy gives the key units (no polling). A request that fits now with nobody waiting is
   * decided at once, exactly as `decide`; one whose cost the limit could never admit, or with
   * `timeoutMs` 0, answers false at once. While callers wait, the units they wait for are
   * reported as rejected every interval, so the owner sees the demand.
   */
  wait(key: string | Descriptor, cost: number, opts: WaitOptions): Promise<boolean> {
    return new Promise((resolve, reject) => {
      try {
        this.waitThen(key, cost, opts, resolve);
      } catch (err) {
        reject(err);
      }
    });
  }

  /**
   * `wait` with a callback instead of a promise, for callers that cannot yield to the event loop
   * between steps (the simulation drives a virtual clock synchronously): `done` is called once,
   * possibly before this returns when decided at once. Throws what `wait` rejects with.
   */
  waitThen(key: string | Descriptor, cost: number, opts: WaitOptions, done: (ok: boolean) => void): void {
    const now = this.waitNow(key, cost, opts);
    if (typeof now === "boolean") done(now);
    else this.waiters.add(now, key, cost, opts.timeoutMs, opts.signal, done);
  }

  /** The answer a wait gets at once, or the counter key it must queue on. */
  private waitNow(key: string | Descriptor, cost: number, opts: WaitOptions): boolean | string {
    checkWaitOptions(opts);
    if (opts.signal?.aborted) return false;
    const e = this.keys.entry(key, cost);
    // Shed by the host guard: no waiting, the host is what is short.
    if (!this.guardAdmits(e)) return false;
    if (this.closed || !(e instanceof ClientKey)) return this.decideEntry(e, cost);
    const queued = this.waiters.has(e.key);
    // Nobody waits: decided as `decide` does (which also shows the demand when it rejects).
    if (!queued && this.decideEntry(e, cost)) return true;
    if (opts.timeoutMs === 0 || !admissible(e.rule, cost)) return false;
    return e.key;
  }

  /** What waiting has cost so far: decisions tried for waiters, and timers set for them. */
  waitStats(): { waiting: number; attempts: number; timers: number } {
    return { waiting: this.waiters.size, attempts: this.waiters.attempts, timers: this.waiters.timers };
  }

  /**
   * A waiter's decision: `decide` without its side effects on a rejection. A waiter tried in vain
   * counts no rejection (its demand is counted once per report round, see `showWaiting`) and
   * asks for no early report: an early report per try would make a report every tenth of an
   * interval, each over a span with no demand in it, and the owner would read this gateway as
   * idle. A REJECT_FRACTION policy rejects a random fraction of arrivals so that its units last
   * the interval; waiters are the backlog itself, admitted in order while units are left.
   */
  private admitWaiter(key: string | Descriptor, cost: number): boolean {
    if (this.closed) return false;
    const e = this.keys.entry(key, cost);
    if (!(e instanceof ClientKey)) return e !== undefined || this.opts.beforeReady === "open";
    const now = this.opts.clock.now();
    let ok: boolean;
    if (e.rule.shadowMode) ok = e.tally(true, cost);
    else if (e.inFallback) ok = e.decideFallback(cost, now, this.opts.random());
    else ok = e.decide(cost, now, PAST_ANY_FRACTION);
    if (!ok) {
      e.rejected -= cost;
      return false;
    }
    e.touch(now);
    this.reporter.markDirty(e);
    return true;
  }

  /** A policy for `k` arrived: its waiters may go; a REJECT_UNTIL wakes them once at its end. */
  private policyArrived(k: ClientKey): void {
    this.opts.onPolicy?.(k.key);
    if (!this.waiters.has(k.key)) return;
    this.waiters.wake(k.key);
    if (k.kind === PolicyKind.REJECT_UNTIL && this.waiters.has(k.key)) {
      // Then the policy has run out and the waiters still wait: ask for the next one now, as a
      // request finding no policy would.
      this.waiters.wakeIn(k.key, Math.max(0, k.until - this.opts.clock.now()), () =>
        this.reporter.reportSoon(this.opts.clock.now()),
      );
    }
  }

  /**
   * Before each report round: the units waiting on each counter are counted as rejected, so the
   * owner sees that demand every interval (and sends a policy back, which wakes the waiters).
   * A key on its fallback share has no owner to answer: its waiters are tried here instead, once
   * per round, since the share refills with time.
   */
  private showWaiting(): void {
    const fallback: string[] = [];
    for (const [counter, head] of this.waiters.demand()) {
      const e = this.keys.entry(head, 1);
      if (e instanceof ClientKey && e.inFallback) fallback.push(counter);
    }
    for (const counter of fallback) this.waiters.wake(counter);
    for (const [, head, units] of this.waiters.demand()) {
      const e = this.keys.entry(head, 1);
      if (!(e instanceof ClientKey)) continue;
      e.tally(false, units);
      this.reporter.markDirty(e);
    }
  }

  /** Callers waiting in `wait`, over all keys. */
  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Admits a request whose cost is known only afterwards (LLM output tokens): `estimate` is
   * counted now, and `settle` corrects it. Null when rejected.
   */
  reserve(key: string | Descriptor, estimate: number): Ticket | null {
    if (!this.decide(key, estimate)) return null;
    return this.ticketFor(key, estimate);
  }

  /**
   * Admits a request whose cost is measured after serving (CPU-seconds, GPU-seconds, tokens:
   * a limit with `resource`): charges the key's predicted cost now (the average of what its
   * settled requests cost, from the rule's `resource.prior`, or 1 unit for a limit without
   * `resource`) and returns a ticket to `finish`
   * with the measured cost, which settles the difference and refines the prediction. Null when
   * rejected: the owner's policy rejects a fraction of the key's requests that keeps their
   * measured use at the quota. Throws InvalidArgumentError for a malformed key or priority.
   *
   *   const t = limiter.begin("api/tenant=acme", { priority: "high" });
   *   if (t === null) return reply(429);
   *   const used = await serve(req); // CPU-seconds measured
   *   t.finish(used);
   */
  begin(key: string | Descriptor, options?: { priority?: Priority }): Ticket | null {
    const p = options?.priority;
    const k = p === undefined || p === DEFAULT_PRIORITY ? key : withPriority(key, p);
    const e = this.keys.entry(k, 1);
    const estimate = e instanceof ClientKey ? e.cost.value : 0;
    if (!this.decide(k, estimate)) return null;
    return this.ticketFor(k, estimate);
  }

  private ticketFor(key: string | Descriptor, estimate: number): Ticket {
    const e = this.keys.entry(key, estimate);
    const settle = (t: Ticket, actual: number) => this.settle(t, actual);
    if (!(e instanceof ClientKey)) return new Ticket(undefined, estimate, 0, settle);
    return new Ticket(e, estimate, windowStart(this.opts.clock.now(), e.rule.windowMs), settle);
  }

  /**
   * Settles a ticket with the real cost, once (a second call does nothing): the difference from
   * the estimate travels in the key's next report, which the owner applies exactly once. More
   * than estimated is charged; less is given back at the owner (whether or not the key is used
   * again), except for a windowed limit whose window has ended since `reserve`.
   */
  settle(ticket: Ticket, actualCost: number): void {
    checkCost(actualCost);
    if (!ticket.markSettled()) return;
    const held = ticket.key?.current();
    if (held === undefined) return;
    const k = this.keys.revive(held);
    k.cost.observe(actualCost);
    k.settle(actualCost - ticket.estimate, ticket.windowAt, this.opts.clock.now());
    this.reporter.markDirty(k);
  }

  /**
   * The cost `begin` would charge for a request of `key` now (its rule's `resource.prior` until
   * requests of it were settled); undefined when no limit applies or the limits are not known.
   */
  predictedCost(key: string | Descriptor, options?: { priority?: Priority }): number | undefined {
    const p = options?.priority;
    const e = this.keys.entry(p === undefined || p === DEFAULT_PRIORITY ? key : withPriority(key, p), 1);
    return e instanceof ClientKey ? e.cost.value : undefined;
  }

  /**
   * Takes `amount` slots of a concurrency limit (1 by default); false if the gateway's share of
   * the limit is in use. Every true must be followed by `release` with the same amount.
   */
  acquire(key: string | Descriptor, amount = 1): boolean {
    const e = this.keys.entry(key, amount);
    if (!this.guardAdmits(e)) return false;
    if (e === undefined) return this.opts.beforeReady === "open";
    const now = this.opts.clock.now();
    e.touch(now);
    if (!(e instanceof ClientKey)) return true;
    if (e.rule.algorithm !== "concurrency") {
      throw new InvalidArgumentError(`${e.rule.id} is a ${e.rule.algorithm} limit: use decide`);
    }
    this.reporter.markDirty(e);
    if (!e.hasPolicy(now)) this.reporter.reportSoon(now);
    return e.acquire(amount, now);
  }

  release(key: string | Descriptor, amount = 1): void {
    const e = this.keys.entry(key, amount);
    if (!(e instanceof ClientKey)) return;
    e.release(amount);
    this.reporter.markDirty(e);
  }

  /**
   * A synchronous, exact decision by the key's owner (`Check`), for the few calls that must not
   * rely on a policy: one network round trip, sent straight to the owner (any server would
   * forward it). Resolves true for keys no limit applies to; rejects when no server answers.
   */
  check(key: string | Descriptor, cost = 1): Promise<boolean> {
    const e = this.keys.entry(key, cost);
    // Shed by the host guard: answered here, with no call to the owner.
    if (!this.guardAdmits(e)) return Promise.resolve(false);
    if (e === undefined) return Promise.reject(new NotReadyError("the limits are not known yet"));
    if (!(e instanceof ClientKey)) return Promise.resolve(true);
    const address = this.directory.routing?.ownerOf(e.point) ?? this.opts.servers[0]!;
    const req = { items: [{ key: e.key, cost }], atomic: false, generation: this.directory.generation };
    return new Promise((resolve, reject) => {
      this.opts.transport.check(address, req, this.opts.reportTimeoutMs * 5, (err, res) => {
        if (err !== undefined || res === undefined) return reject(err ?? new Error("no answer"));
        this.directory.sawGeneration(res.generation);
        const r = res.results[0];
        if (r?.error?.code) return reject(errorFromItem(r.error, res.generation));
        resolve(r?.allowed === true);
      });
    });
  }

  /**
   * Issue 14: this process, a backend of `pool`, reports its utilisation ([0, 1]) and capacity
   * (units per second) to the owner of the pool's key; resolves with the pool's mode, level and
   * per-class rejected fractions. Backends report every ~100 ms; one silent for a second drops out
   * of the pool's average. `backend` defaults to this client's id.
   */
  reportPool(
    pool: string,
    utilisation: number,
    capacity: number,
    backend?: string,
  ): Promise<PoolReportResponse> {
    const send = this.opts.transport.reportPool?.bind(this.opts.transport);
    if (send === undefined) return Promise.reject(new Error("this transport cannot report pool load"));
    const point = keyPoint(poolShardKey(pool));
    const address = this.directory.routing?.ownerOf(point) ?? this.opts.servers[0]!;
    const req = {
      pool,
      backend: backend ?? this.opts.clientId,
      utilisation,
      capacity,
      generation: this.directory.generation,
    };
    return new Promise((resolve, reject) => {
      send(address, req, this.opts.reportTimeoutMs * 5, (err, res) => {
        if (err !== undefined || res === undefined) return reject(err ?? new Error("no answer"));
        this.directory.sawGeneration(res.generation);
        if (res.error?.code) return reject(errorFromItem(res.error, res.generation));
        resolve(res);
      });
    });
  }

  /** The rule and the owner's latest figures for a key: what the sidecar answers Envoy with. */
  describe(key: string | Descriptor):
    | {
        rule: LimitRule;
        /** Whether the owner has answered for this key yet. */
        known: boolean;
        /** Cluster-wide units left, and when the counter is full again, as of the owner's last answer. */
        remaining: number;
        resetAt: number;
        /** Units this gateway admitted since that answer. */
        admittedSince: number;
        fallback: boolean;
      }
    | undefined {
    const e = this.keys.entry(key, 1);
    if (!(e instanceof ClientKey)) return undefined;
    return {
      rule: e.rule,
      known: e.kind !== 0,
      remaining: e.remaining,
      resetAt: e.resetAt,
      admittedSince: e.admitted,
      fallback: e.inFallback,
    };
  }

  /**
   * Counts decided elsewhere, reported for the counter key `key` as this gateway's own: the owner
   * of a global key in a region passes on what its region's gateways admitted and rejected (see
   * cluster/global-tier.ts). The key is reported at the next interval even when both are 0, so
   * its policy is renewed. False while the limits are not known or no limit applies to `key`.
   */
  account(key: string, admitted: number, rejected: number): boolean {
    return this.record(key, admitted, rejected) !== undefined;
  }

  /**
   * The owner's latest policy for `key` as it arrived (its `units` before anything admitted here
   * came off them), when it arrived, and how many gateways report the key; undefined before the
   * first answer.
   */
  lastPolicy(key: string): { policy: Policy; at: number; gateways: number } | undefined {
    const e = this.keys.entry(key, 1);
    return e instanceof ClientKey ? e.lastPolicy : undefined;
  }

  /**
   * Why this gateway admits or rejects `key` now, in words, from the state its decisions use: the
   * owner's policy in force, the local allowance, or the fallback share when the owner is lost.
   * Undefined when the limits are not known yet or no limit applies.
   */
  inspect(key: string | Descriptor): GatewayInspection | undefined {
    const e = this.keys.entry(key, 1);
    if (!(e instanceof ClientKey)) return undefined;
    const now = this.opts.clock.now();
    const rule = e.rule;
    const limit = `${rule.id} (${rule.limit} per ${rule.windowMs} ms)`;
    const f = e.fallbackShare;
    let state: string;
    let why: string;
    if (f !== undefined) {
      state = "fallback";
      why =
        rule.failMode === "closed"
          ? `fallback: the owner of ${limit} is unreachable and the rule is fail_mode closed: every request is rejected`
          : `fallback: the owner of ${limit} is unreachable; this gateway decides on its own share, the limit / ${f.gateways} gateway(s) = ${round(f.perWindow)} per window, ${round(f.left)} left`;
    } else if (!e.hasPolicy(now)) {
      state = "allowance";
      why = `no policy in force from the owner: a local allowance of ${round(Math.max(0, e.allowance))} units of ${limit} is left`;
    } else {
      state = policyKindName(e.kind);
      const left = Math.round(e.until - now);
      why =
        e.kind === PolicyKind.ALLOW
          ? `the owner allows ${limit} for ${left} ms`
          : e.kind === PolicyKind.REJECT_UNTIL
            ? `over limit: the owner said ${limit} is spent: every request is rejected for ${left} ms`
            : e.kind === PolicyKind.REJECT_FRACTION
              ? `fair share: the owner holds this gateway to its share of ${limit}: ${round(e.fraction * 100)}% of requests rejected, ${round(Math.max(0, e.units))} units left, for ${left} ms`
              : `the owner grants ${round(Math.max(0, e.units))} more units of ${limit} for ${left} ms${e.units <= 0 ? ": spent, requests are rejected until the next answer" : ""}`;
    }
    return {
      rule: rule.id,
      state,
      why,
      remaining: e.remaining,
      resetMs: Math.max(0, Math.round(e.resetAt - now)),
      admittedSinceReport: e.admitted,
      rejectedSinceReport: e.rejected,
    };
  }

  /**
   * Counts decisions made elsewhere (Envoy's RLQS filter decides on its own assignment and reports
   * what it let through): reported to the owner as `decide`'s would be. Returns the counter key, or
   * undefined when no limit applies (or the limits are not known yet: then nothing is counted).
   */
  record(key: string | Descriptor, admitted: number, rejected: number): string | undefined {
    const e = this.keys.entry(key, 1);
    if (!(e instanceof ClientKey)) return undefined;
    const now = this.opts.clock.now();
    e.touch(now);
    if (admitted > 0) e.tally(true, admitted);
    if (rejected > 0) e.tally(false, rejected);
    this.reporter.markDirty(e);
    if (!e.hasPolicy(now)) this.reporter.reportSoon(now);
    return e.key;
  }

  /** The owner's policy in force for the counter of `key` (as given to `record`), if any. */
  policyOf(
    key: string | Descriptor,
  ): { kind: PolicyKind; units: number; fraction: number; until: number; granted: number } | undefined {
    const e = this.keys.entry(key, 1);
    if (!(e instanceof ClientKey) || !e.hasPolicy(this.opts.clock.now())) return undefined;
    return {
      kind: e.kind as PolicyKind,
      units: e.units,
      fraction: e.fraction,
      until: e.until,
      granted: e.grantedUnits,
    };
  }

  // ---- the report loop --------------------------------------------------------------------

  private arm(ms: number): void {
    if (this.closed) return;
    this.timer = this.opts.clock.after(ms, () => {
      try {
        this.tick();
      } catch (e) {
        this.opts.logger.warn({ err: (e as Error).message }, "report tick failed");
      }
      this.arm(this.opts.reportIntervalMs);
    });
  }

  /**
   * One report interval: a report per owner with the keys used since the last one (`early`: see
   * Reporter.report), then forgetting idle keys and refreshing the assignment when due.
   */
  tick(early = false): void {
    const routing = this.directory.routing;
    const now = this.opts.clock.now();
    if (!early && this.waiters.size > 0) this.showWaiting();
    if (routing !== undefined) this.reporter.report(routing, now, early);
    this.keys.sweepEvery(now);
    this.directory.refreshIfDue(now);
  }

  stats(): LimiterStats {
    return {
      keys: this.keys.size,
      fallbackKeys: this.keys.fallbackCount(),
      reportsSent: this.reporter.reportsSent,
      reportsFailed: this.reporter.reportsFailed,
      reportsTooOld: this.reporter.reportsTooOld,
      unitsAdmitted: this.reporter.unitsAdmitted,
      unitsRejected: this.reporter.unitsRejected,
      generation: this.directory.generation,
      configVersion: this.keys.config?.version ?? "",
    };
  }

  /** Counter keys currently decided by the local fallback share (owner unreachable). */
  fallbackKeys(max = 100): string[] {
    return this.keys.fallbackKeys(max);
  }

  /** Stops reporting. Counts not yet reported are lost; call `flush` first to send them. */
  close(): void {
    this.closed = true;
    this.guard?.stop();
    this.waiters.close();
    this.timer?.cancel();
    this.reporter.close();
    this.directory.close();
    if (this.opts.closeTransport) this.opts.transport.close();
  }

  /** Sends what is pending now instead of at the next interval. */
  flush(): void {
    this.tick();
  }
}

/** Whether the limit could ever admit `cost` at once (a larger cost would wait in vain). */
function admissible(rule: LimitRule, cost: number): boolean {
  return rule.shadowMode || cost <= rule.limit + (rule.algorithm === "token_bucket" ? rule.burst : 0);
}

/** A draw above any fraction under 1: a REJECT_FRACTION policy then admits while units are left. */
const PAST_ANY_FRACTION = 1 - Number.EPSILON;
