import { RATE_ALGORITHMS } from "./algorithms/index.js";
import { type RateAlgorithm, realignedStart } from "./algorithms/types.js";
import { ClassTable } from "./class-table.js";
import { type ClientShare, ClientTable, clientStaleMs } from "./clients.js";
import { LeaseTable } from "./concurrency.js";
import { BORROW_RANK, Contention, type Subject } from "./contention.js";
import { Counter } from "./counter.js";
import { CounterTable, type CounterTake, type PointRange } from "./counter-table.js";
import {
  CapacityError,
  type CheckItem,
  type CheckMode,
  type Decision,
  type RejectReason,
  type ReportEntry,
  UNLIMITED_DECISION,
} from "./decision.js";
import { ReportDedup, type SeqVerdict } from "./dedup.js";
import type { Limit } from "./limit.js";
import { allowPolicy, concurrencyPolicy, type Policy, ratePolicy } from "./policy.js";
import { PRIORITY_RANK } from "./priority.js";
import { type CounterSnapshot, fuller, restoreCounter, snapshotCounter } from "./transfer.js";

export interface EngineOptions {
  /** New keys past this many counters are refused, so memory stays bounded. */
  maxCounters?: number;
  /** Dedup state of a client silent this long is forgotten. */
  clientTtlMs?: number;
  /**
   * Leases held at once on one concurrency key. Amounts may be fractional, so the limit alone
   * does not bound how many leases fit under it.
   */
  maxLeasesPerKey?: number;
  /**
   * Where a shard key lands in the key space (the cluster's `keyPoint`). Given, every counter's
   * point is computed once at creation and the counters are indexed by slice of the key space, so
   * `takeRanges` visits only the counters of the ranges it takes. Without it, `takeRanges` scans.
   */
  pointOf?: (shard: string) => number;
  /**
   * Keep the keys of counters changed since last taken (`takeChanged`), for standby copies. Off,
   * nothing is kept (no taker would ever empty the list).
   */
  trackChanges?: boolean;
}

/** Where counters put into the engine come from (see `putCounters`). */
export type CounterSource = "handoff" | "standby" | "standby-until-handoff";

/**
 * A counter restored from a standby copy: the units of the window (`t`) the copy already held,
 * which re-sent window totals of gateways absorb before they add (see `reportOn`).
 */
interface StandbyFloor {
  units: number;
  t: number;
}

/**
 * The counting engine: every counter, every algorithm, synchronous and pure of I/O. Time comes in
 * as `now` on every call, so tests and the simulation drive it exactly.
 */
export class Engine {
  private readonly counters: CounterTable;
  private readonly dedup = new ReportDedup();
  private readonly maxCounters: number;
  private readonly maxLeasesPerKey: number;
  private readonly clientTtlMs: number;
  private sweepCursor: Iterator<[string, Counter]> | undefined;
  private readonly pending = new Map<Counter, number>();
  /** checkMany's scratch: ties with a rejected item, ties whose soft item borrows, and those items. */
  private readonly tieFails = new Set<number>();
  private readonly borrowing = new Set<number>();
  /** Soft items admitted on their parent's idle capacity: charged there, not on their own. */
  private readonly borrowed = new Set<number>();
  private readonly tracking: boolean;
  /**
   * Keys whose counter was flagged `changed`, oldest first from `changedHead`. A key whose counter
   * was dropped, replaced or already taken stays until it is reached (or compacted away) and is
   * skipped then: its counter is gone or no longer flagged.
   */
  private changedKeys: string[] = [];
  private changedHead = 0;
  /** Weak: a counter dropped or replaced takes its floor with it. */
  private readonly floors = new WeakMap<Counter, StandbyFloor>();
  /** Counters restored from `standby-until-handoff` copies: a handoff replaces them whole. */
  private readonly provisional = new WeakSet<Counter>();

  constructor(opts: EngineOptions = {}) {
    this.maxCounters = opts.maxCounters ?? 5_000_000;
    this.clientTtlMs = opts.clientTtlMs ?? 600_000;
    this.maxLeasesPerKey = opts.maxLeasesPerKey ?? 100_000;
    this.counters = new CounterTable(opts.pointOf);
    this.tracking = opts.trackChanges ?? false;
  }

  /** Records that `key`'s counter changed: one flag test on the hot path once it is flagged. */
  private touch(key: string, c: Counter): void {
    if (c.changed || !this.tracking) return;
    c.changed = true;
    this.changedKeys.push(key);
    // Entries outnumber counters only by the stale ones: compacting at twice the counters keeps
    // the list bounded by the table, at an amortized O(1) per push.
    if (this.changedKeys.length - this.changedHead > 2 * this.counters.size + 1024) this.compactChanged();
  }

  private compactChanged(): void {
    const live: string[] = [];
    const seen = new Set<string>();
    for (let i = this.changedHead; i < this.changedKeys.length; i++) {
      const key = this.changedKeys[i]!;
      if (this.counters.get(key)?.changed && !seen.has(key)) {
        seen.add(key);
        live.push(key);
      }
    }
    this.changedKeys = live;
    this.changedHead = 0;
  }

  /** Counters flagged changed and not yet taken, with stale entries (an upper bound). */
  get changedPending(): number {
    return this.changedKeys.length - this.changedHead;
  }

  /**
   * Snapshots of up to `max` counters changed since they were last taken, oldest change first;
   * they count as unchanged from now on. Counters dropped meanwhile (swept, handed over) are not
   * among them.
   */
  takeChanged(max: number, now: number): CounterSnapshot[] {
    const out: CounterSnapshot[] = [];
    const keys = this.changedKeys;
    let i = this.changedHead;
    for (; i < keys.length && out.length < max; i++) {
      const key = keys[i]!;
      const c = this.counters.get(key);
      if (c === undefined || !c.changed) continue;
      c.changed = false;
      out.push(snapshotCounter(key, c, now));
    }
    this.changedHead = i;
    if (i === keys.length) {
      this.changedKeys = [];
      this.changedHead = 0;
    } else if (i > 4096 && i > keys.length / 2) {
      this.changedKeys = keys.slice(i);
      this.changedHead = 0;
    }
    return out;
  }

  /**
   * Flags every counter changed (a new buddy holds none of their copies). One pass over the
   * table: membership changes are rare.
   */
  markAllChanged(): void {
    for (const [key, c] of this.counters) this.touch(key, c);
  }

  /** Flags the counters of `keys` changed again (their copies did not reach the buddy). */
  markChanged(keys: Iterable<string>): void {
    for (const key of keys) {
      const c = this.counters.get(key);
      if (c !== undefined) this.touch(key, c);
    }
  }

  get size(): number {
    return this.counters.size;
  }

  get clients(): number {
    return this.dedup.size;
  }

  /** The counter for `key`, new (or re-made for a new algorithm); valid while not `removed`. */
  counterFor(key: string, l: Limit, now: number, shard = key): Counter {
    let c = this.counters.get(key);
    if (c !== undefined && c.algorithm === l.algorithm) return c;
    if (c === undefined && this.counters.size >= this.maxCounters) throw new CapacityError(this.maxCounters);
    const old = c;
    c = new Counter(l.algorithm, shard);
    if (l.algorithm === "concurrency") c.leases = new LeaseTable();
    else RATE_ALGORITHMS[l.algorithm].init(c, l, now);
    this.counters.install(key, c, old);
    return c;
  }

  /** Read-only: the counter of `key`, if this engine holds one (inspection). */
  existing(key: string): Counter | undefined {
    return this.counters.get(key);
  }

  /** Read-only: the state of `key` as a decision of cost 0 would see it. */
  peek(key: string, l: Limit, now: number): Decision {
    if (l.unlimited) return UNLIMITED_DECISION;
    const c = this.counters.get(key);
    if (l.algorithm === "concurrency") {
      const held = c?.algorithm === "concurrency" ? this.held(c, l, now) : 0;
      return {
        allowed: held < l.limit,
        shadowed: false,
        remaining: Math.max(0, l.limit - held),
        resetAt: now,
        retryAt: now,
      };
    }
    const alg = RATE_ALGORITHMS[l.algorithm];
    const probe = new Counter(l.algorithm);
    if (c?.algorithm === l.algorithm) {
      probe.t = c.t;
      probe.x = c.x;
      probe.y = c.y;
    } else alg.init(probe, l, now);
    alg.advance(probe, l, now);
    return this.decision(alg, probe, l, true, false, 0, now);
  }

  private decision(
    alg: RateAlgorithm,
    c: Counter,
    l: Limit,
    allowed: boolean,
    shadowed: boolean,
    cost: number,
    now: number,
  ): Decision {
    return {
      allowed,
      shadowed,
      remaining: Math.max(0, Math.floor(alg.available(c, l, now))),
      resetAt: alg.resetAt(c, l, now),
      retryAt: allowed ? now : alg.availableAt(c, l, cost, now),
    };
  }

  /** One key, strict: admitted only if the whole cost fits. */
  check(key: string, l: Limit, cost: number, now: number): Decision {
    return this.checkMany([{ key, limit: l, cost }], now, "strict")[0]!;
  }

  checkMany(items: readonly CheckItem[], now: number, mode: CheckMode): Decision[] {
    const out: Decision[] = new Array(items.length);
    const counters: (Counter | undefined)[] = new Array(items.length);
    const subjects: (Subject | undefined)[] = new Array(items.length);
    const fits: boolean[] = new Array(items.length);
    /** Why an item did not fit (allocated on the first rejection only). */
    let reasons: (RejectReason | undefined)[] | undefined;
    // Phase 1: decide every item against the state plus what earlier items of this call take,
    // so two descriptors on one counter cannot both pass on the same remaining units.
    let allFit = true;
    const { tieFails, borrowing, borrowed } = this;
    // Map.clear allocates a new table even for an empty map: these are almost always empty.
    if (tieFails.size > 0) tieFails.clear();
    if (borrowing.size > 0) borrowing.clear();
    if (borrowed.size > 0) borrowed.clear();
    // What earlier items of a short call take from a counter is summed over them (a few
    // comparisons); a long call keeps it in a Map, which costs a new table each call to clear.
    const short = items.length <= SHORT_CALL;
    if (!short && this.pending.size > 0) this.pending.clear();
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      const { key, limit: l, cost, shard } = item;
      if (l.unlimited) {
        fits[i] = true;
        continue;
      }
      if (l.algorithm === "concurrency") {
        throw new RangeError(`checkMany: ${key} is a concurrency limit; use acquire/release`);
      }
      const c = this.counterFor(key, l, now, shard);
      const alg = RATE_ALGORITHMS[l.algorithm];
      alg.advance(c, l, now);
      counters[i] = c;
      let taken = 0;
      if (!short) taken = this.pending.get(c) ?? 0;
      else {
        for (let j = 0; j < i; j++) {
          if (counters[j] === c && (fits[j] || items[j]!.limit.shadowMode)) taken += items[j]!.cost;
        }
      }
      const available = alg.available(c, l, now) - taken;
      let fit: boolean;
      if (c.contention !== undefined || contended(item, l)) {
        // Divided by class and tenant: decided strictly (a rejected hit takes nothing, Envoy mode
        // included: a paced tenant's rejected hits must not use up the others' window).
        c.contention ??= new Contention();
        const borrow = item.tie !== undefined && borrowing.has(item.tie);
        const rank = borrow ? BORROW_RANK : (item.rank ?? DEFAULT_RANK);
        const s = c.contention.offer(item.subject ?? "", rank, item.weight ?? 1, cost, now);
        subjects[i] = s;
        fit = c.contention.admits(s, cost, available, c, l, now);
      } else {
        fit = envoyCounts(mode, item) ? true : available >= cost;
      }
      if (!fit && l.soft && item.tie !== undefined && !l.shadowMode) {
        // Over its own limit: may borrow from its fair-share parent, the next item of the tie,
        // which decides for both.
        borrowing.add(item.tie);
        borrowed.add(i);
        fit = true;
      }
      fits[i] = fit;
      // Only what will be consumed holds units back from later items (a rejected strict item
      // takes nothing; an atomic call with any rejection takes nothing at all).
      // Read by later items only: the last one (a single-item call's only one) records nothing.
      if ((fit || l.shadowMode) && !short && i + 1 < items.length) this.pending.set(c, taken + cost);
      if (!fit && !l.shadowMode) {
        reasons ??= new Array(items.length);
        reasons[i] =
          subjects[i] === undefined
            ? { kind: "over_limit", cost, available }
            : c.contention!.why(subjects[i]!, cost, available, c, l, now);
        allFit = false;
        if (item.tie !== undefined) tieFails.add(item.tie);
      }
    }
    // Phase 2: commit.
    for (let i = 0; i < items.length; i++) {
      const { limit: l, cost, tie } = items[i]!;
      const c = counters[i];
      if (c === undefined) {
        out[i] = UNLIMITED_DECISION;
        continue;
      }
      const alg = RATE_ALGORITHMS[l.algorithm as keyof typeof RATE_ALGORITHMS];
      const s = subjects[i];
      if (s === undefined && envoyCounts(mode, items[i]!)) {
        // envoyproxy/ratelimit increments first and compares after, admitted or not.
        alg.consume(c, l, cost, now);
        this.touch(items[i]!.key, c);
        const over = c.x > l.limit;
        out[i] = this.decision(alg, c, l, !over || l.shadowMode, over && l.shadowMode, cost, now);
        if (over && !l.shadowMode) {
          out[i]!.reason = { kind: "over_limit", cost };
        }
        continue;
      }
      const fit = fits[i]!;
      const tied = tie === undefined || !tieFails.has(tie);
      const admit = (mode === "atomic" ? allFit && (fit || l.shadowMode) : fit || l.shadowMode) && tied;
      if (admit && !borrowed.has(i)) {
        alg.consume(c, l, cost, now);
        this.touch(items[i]!.key, c);
        if (s !== undefined) c.contention!.took(s, cost);
      }
      const d = this.decision(alg, c, l, admit, admit && !fit, cost, now);
      out[i] = d;
      if (admit && borrowed.has(i)) d.borrowed = true;
      else if (!admit) {
        const reason = reasons?.[i] ?? { kind: "together", cost };
        d.reason = reason;
        // Units there but kept for the classes above (a reserve, their expected demand): room
        // for this class comes back only once the counter holds the cost and what is kept, not
        // when it holds the cost alone (the retry hint and the waiters' wake-up said "1 ms" while
        // every retry was shed again).
        if (reason.kept !== undefined && reason.kept > 0) {
          const cap = l.algorithm === "token_bucket" ? l.burst : l.limit;
          d.retryAt = Math.max(d.retryAt, alg.availableAt(c, l, Math.min(cap, cost + reason.kept), now));
        }
        if (reason.paceMs !== undefined) d.retryAt = Math.max(d.retryAt, now + Math.ceil(reason.paceMs));
      }
    }
    return out;
  }

  /** Settles a cost known afterwards (`delta`: actual - reserved), charged even past the limit. */
  adjust(key: string, l: Limit, delta: number, now: number, shard = key): Decision {
    if (l.unlimited) return UNLIMITED_DECISION;
    if (l.algorithm === "concurrency") throw new RangeError(`adjust: ${key} is a concurrency limit`);
    const c = this.counterFor(key, l, now, shard);
    const alg = RATE_ALGORITHMS[l.algorithm];
    alg.advance(c, l, now);
    alg.consume(c, l, delta, now);
    this.touch(key, c);
    return this.decision(alg, c, l, true, false, 0, now);
  }

  /**
   * The window `key`'s counter counts in now (windowed algorithms; 0 for a token bucket or no
   * counter), recorded by a ticket so that its refund goes to that window only.
   */
  windowOf(key: string, l: Limit): number {
    const c = this.counters.get(key);
    return c === undefined || c.algorithm !== l.algorithm || l.algorithm === "token_bucket" ? 0 : c.t;
  }

  /**
   * Settles one charge of a ticket: `delta` is actual minus estimate. More than estimated is
   * charged now, even past the limit (the cost was incurred). Less is refunded to the window the
   * estimate was charged in (`windowAt`, from `windowOf`): a window that has ended takes nothing
   * back, so a late refund never adds capacity to the current window. A sliding window's previous
   * window still weighs on the current estimate: a refund for it lowers that count. A token
   * bucket takes a refund back up to its burst, never past it.
   */
  settleCharge(key: string, l: Limit, delta: number, windowAt: number, now: number, shard = key): Decision {
    if (l.unlimited) return UNLIMITED_DECISION;
    if (l.algorithm === "concurrency") throw new RangeError(`settleCharge: ${key} is a concurrency limit`);
    if (delta >= 0) return this.adjust(key, l, delta, now, shard);
    const c = this.counters.get(key);
    // No counter (swept as good as new, handed over) or another algorithm's: nothing to give back.
    if (c === undefined || c.algorithm !== l.algorithm) return this.peek(key, l, now);
    const alg = RATE_ALGORITHMS[l.algorithm];
    alg.advance(c, l, now);
    let applied = true;
    if (l.algorithm === "token_bucket" || c.t === windowAt) alg.consume(c, l, delta, now);
    else if (l.algorithm === "sliding_window" && c.t - l.windowMs === windowAt)
      c.y = Math.max(0, c.y + delta);
    else applied = false;
    if (applied) this.touch(key, c);
    return this.decision(alg, c, l, true, false, 0, now);
  }

  private held(c: Counter, l: Limit, now: number): number {
    c.leases!.sweep(now);
    this.pruneConcurrencyClients(c, l, now);
    return c.leases!.held + (c.clients?.sumHeld ?? 0);
  }

  /** Takes `amount` concurrency slots under `leaseId` until released or `now + timeout`. */
  acquire(
    key: string,
    l: Limit,
    leaseId: string,
    amount: number,
    now: number,
    timeoutMs = l.leaseTimeoutMs,
    shard = key,
    /** The identity taking it (recorded; see `leaseTaker`). */
    taker?: string,
  ): Decision {
    if (l.unlimited) return UNLIMITED_DECISION;
    const c = this.counterFor(key, l, now, shard);
    const leases = c.leases!;
    this.pruneConcurrencyClients(c, l, now);
    leases.sweep(now);
    if (leases.has(leaseId)) {
      // A retried acquire of a lease already held: renew it, take nothing more.
      leases.renew(leaseId, now + timeoutMs);
      c.expiresAt = Math.max(c.expiresAt, now + timeoutMs);
      this.touch(key, c);
      return this.concurrencyDecision(c, l, true, false, now);
    }
    if (leases.size >= this.maxLeasesPerKey) {
      throw new CapacityError(
        this.maxLeasesPerKey,
        `${key} holds its maximum of ${this.maxLeasesPerKey} leases; release some first`,
      );
    }
    const free = l.limit - leases.held - (c.clients?.sumHeld ?? 0);
    const fit = free >= amount;
    if (fit || l.shadowMode) {
      leases.add(leaseId, amount, now + timeoutMs, taker);
      c.expiresAt = Math.max(c.expiresAt, now + timeoutMs);
      this.touch(key, c);
    }
    return this.concurrencyDecision(c, l, fit || l.shadowMode, !fit && l.shadowMode, now);
  }

  /** Extends a held lease; false if it is unknown or expired. */
  renew(key: string, l: Limit, leaseId: string, now: number, timeoutMs = l.leaseTimeoutMs): boolean {
    const c = this.counters.get(key);
    if (!c?.leases) return false;
    c.leases.sweep(now);
    const ok = c.leases.renew(leaseId, now + timeoutMs);
    if (ok) {
      c.expiresAt = Math.max(c.expiresAt, now + timeoutMs);
      this.touch(key, c);
    }
    return ok;
  }

  /**
   * The identity that took lease `leaseId` of `key`: undefined when no such lease is held (or it
   * was taken without an identity). Changes nothing.
   */
  leaseTaker(key: string, leaseId: string, now: number): string | undefined {
    return this.counters.get(key)?.leases?.takerOf(leaseId, now);
  }

  /** Frees a lease; false if it was unknown (already released or expired). */
  release(key: string, leaseId: string, now: number): boolean {
    const c = this.counters.get(key);
    if (!c?.leases) return false;
    c.leases.sweep(now);
    const released = c.leases.release(leaseId) > 0;
    if (released) this.touch(key, c);
    return released;
  }

  private pruneConcurrencyClients(c: Counter, l: Limit, now: number): void {
    if (c.clients) c.clients.prune(now, l.leaseTimeoutMs);
  }

  private concurrencyDecision(
    c: Counter,
    l: Limit,
    allowed: boolean,
    shadowed: boolean,
    now: number,
  ): Decision {
    const free = l.limit - c.leases!.held - (c.clients?.sumHeld ?? 0);
    return {
      allowed,
      shadowed,
      remaining: Math.max(0, Math.floor(free)),
      resetAt: now,
      retryAt: allowed ? now : Number.NaN,
    };
  }

  /** Whether a batched report (client id, sequence number) is new, recording it if so. */
  acceptReport(clientId: string, seq: number, now: number): SeqVerdict {
    return this.dedup.accept(clientId, seq, now);
  }

  /** A report accepted as new applied nothing: a copy sent again is new too. */
  forgetReport(clientId: string, seq: number): void {
    this.dedup.forget(clientId, seq);
  }

  /**
   * Folds one gateway's counts for one key into the counter (when `apply`; a duplicate report only
   * re-reads) and returns that gateway's policy for the key.
   */
  report(
    key: string,
    l: Limit,
    clientId: string,
    e: ReportEntry,
    apply: boolean,
    intervalMs: number,
    now: number,
    spanMs = intervalMs,
  ): Policy {
    if (l.unlimited) return allowPolicy(now + 60_000, Number.POSITIVE_INFINITY, 0);
    return this.reportOn(this.counterFor(key, l, now), key, l, clientId, e, apply, intervalMs, now, spanMs);
  }

  /**
   * `report` on a counter reference from `counterFor(key)` that is still current (not
   * `removed`). `spanMs` is how long the counts took to gather: the client's demand is measured
   * over it.
   */
  reportOn(
    c: Counter,
    key: string,
    l: Limit,
    clientId: string,
    e: ReportEntry,
    apply: boolean,
    intervalMs: number,
    now: number,
    spanMs = intervalMs,
  ): Policy {
    if (l.unlimited) return allowPolicy(now + 60_000, Number.POSITIVE_INFINITY, 0);
    c.clients ??= new ClientTable();
    const table = c.clients;
    if (l.algorithm === "concurrency") {
      table.prune(now, l.leaseTimeoutMs);
      const s = table.upsert(clientId, now);
      if (apply) {
        table.setHeld(s, e.held);
        table.observe(s, (e.admitted + e.rejected) / spanMs, spanMs);
        this.touch(key, c);
      }
      c.leases!.sweep(now);
      c.expiresAt = Math.max(c.expiresAt, now + l.leaseTimeoutMs);
      return concurrencyPolicy(c.leases!.held + table.sumHeld, l, s, table, intervalMs, now);
    }
    const s = this.applyRate(c, key, l, table, clientId, e, apply, intervalMs, now, spanMs);
    const policy = ratePolicy(RATE_ALGORITHMS[l.algorithm], c, l, s, table, intervalMs, now);
    c.expiresAt = Math.max(c.expiresAt, now + clientStaleMs(intervalMs));
    return policy;
  }

  /**
   * `reportOn` for a gateway's report of a tenant's key under a `fair_share` limit: folds the
   * counts into the group's counter `c` and returns the gateway's policy on the group: the
   * group's supply divided among tenants by weight first, then among the tenant's gateways.
   */
  reportShared(
    c: Counter,
    key: string,
    l: Limit,
    rank: number,
    tenant: string,
    weight: number,
    clientId: string,
    e: ReportEntry,
    apply: boolean,
    intervalMs: number,
    now: number,
    spanMs = intervalMs,
  ): Policy {
    if (l.unlimited) return allowPolicy(now + 60_000, Number.POSITIVE_INFINITY, 0);
    if (l.algorithm === "concurrency")
      throw new RangeError(`reportShared: ${l.algorithm} is not divided by tenant or class`);
    // The counter's own table holds every (class, tenant, gateway): the counter's totals, the
    // rebuild after a crash and the ALLOW test read it. The class table divides.
    c.clients ??= new ClientTable();
    c.classes ??= new ClassTable();
    const s = this.applyRate(
      c,
      key,
      l,
      c.clients,
      `${rank}\u0000${tenant}\u0000${clientId}`,
      e,
      apply,
      intervalMs,
      now,
      spanMs,
    );
    const staleMs = clientStaleMs(intervalMs);
    const classes = c.classes;
    classes.prune(now, staleMs);
    const tenants = classes.tenants(rank);
    const t = tenants.upsert(tenant, weight);
    const g = t.gateways.upsert(clientId, now);
    if (apply) {
      t.gateways.observe(g, (e.admitted + e.rejected) / spanMs, spanMs);
      t.gateways.offered(e.admitted + e.rejected, now);
      classes.charge(rank, e.admitted - (e.refunded ?? 0), l, now);
    }
    const part = (capacity: number) => classes.part(rank, capacity, l, now);
    const policy = ratePolicy(RATE_ALGORITHMS[l.algorithm], c, l, s, c.clients, intervalMs, now, {
      share: (capacity) => t.gateways.fairShare(g, tenants.share(t, part(capacity), now), now),
      // Those a heavy gateway must leave room for: the classes above, the tenants of its class
      // within their share and, in its own tenant, the gateways within theirs.
      free: (capacity) => {
        const p = part(capacity);
        return (
          classes.above(rank, capacity, l, now) +
          tenants.freeDemand(p, now, t) +
          t.gateways.freeDemand(tenants.share(t, p, now), now)
        );
      },
      // A tenant within its share is light whole: its gateways' estimates of a sparse flow read
      // high, and dividing its part among them would make some look heavy. In a heavy tenant each
      // gateway is judged against its part of the tenant's.
      // A class within its part is light whole, for the same reason.
      within: (capacity, share) =>
        classes.within(rank, capacity, l, now) ||
        tenants.within(t, part(capacity), now) ||
        g.demand <= share * 1.001,
      reserved: () => classes.reservedAbove(rank, l),
      cap: () => classes.capOf(rank, l, now),
    });
    c.expiresAt = Math.max(c.expiresAt, now + staleMs);
    return policy;
  }

  /**
   * A soft limit's debt, forgiven: what its tenant took beyond it while borrowing the idle
   * capacity of the fair-share limit above was counted there, and is not owed back here. Only the
   * part over the limit: a window's count comes down to the limit, a bucket's balance up to zero.
   * At most `max` units (a pool's loan, issue 14). Returns the units forgiven.
   */
  forgive(c: Counter, l: Limit, now: number, max = Number.POSITIVE_INFINITY): number {
    if (l.unlimited || l.algorithm === "concurrency") return 0;
    const alg = RATE_ALGORITHMS[l.algorithm];
    alg.advance(c, l, now);
    const over = Math.min(max, -alg.available(c, l, now));
    if (!(over > 0)) return 0;
    alg.consume(c, l, -over, now);
    return over;
  }

  /** Folds one gateway's rate-limit report into `c` (when `apply`); returns the gateway's entry. */
  private applyRate(
    c: Counter,
    key: string,
    l: Limit,
    table: ClientTable,
    clientId: string,
    e: ReportEntry,
    apply: boolean,
    intervalMs: number,
    now: number,
    spanMs: number,
  ): ClientShare {
    table.prune(now, clientStaleMs(intervalMs));
    const s = table.upsert(clientId, now);
    const alg = RATE_ALGORITHMS[l.algorithm as keyof typeof RATE_ALGORITHMS];
    alg.advance(c, l, now);
    if (apply) {
      // A client re-sends its window-to-date total when the key's owner (or that owner's process)
      // changed. A counter that did not come whole by handoff takes it once per client, less what
      // it already counted from that client: the count is rebuilt after a crash or a restart,
      // never doubled. A handed-over counter is whole already.
      let used = e.admitted;
      if (!c.complete && !s.rebuilt && e.windowAdmitted > 0) {
        used = Math.max(e.admitted, e.windowAdmitted - s.counted);
        used = this.absorbed(c, l, used);
        s.rebuilt = true;
      }
      s.counted += used;
      alg.consume(c, l, used, now);
      const refund = refundable(c, l, s, used, e.refunded ?? 0);
      if (refund > 0) {
        s.counted -= refund;
        alg.consume(c, l, -refund, now);
      }
      if (used > 0 || refund > 0) this.touch(key, c);
      table.observe(s, (e.admitted + e.rejected) / spanMs, spanMs);
      table.offered(e.admitted + e.rejected, now);
    }
    return s;
  }

  /**
   * What is left of a re-sent window total once a standby copy's count has absorbed its share. The
   * copy (up to one replication interval old) and the gateways' totals count the same units: the
   * gateways' totals together raise the count only past what the copy held, so the window ends up
   * at the larger of the two, never their sum. Only in the window the copy was taken in.
   */
  private absorbed(c: Counter, l: Limit, units: number): number {
    const floor = this.floors.get(c);
    if (floor === undefined) return units;
    if (realignedStart(floor.t, l.windowMs) !== c.t) {
      this.floors.delete(c);
      return units;
    }
    const take = Math.min(floor.units, units);
    floor.units -= take;
    if (floor.units <= 0) this.floors.delete(c);
    return units - take;
  }

  /**
   * Removes the counters whose shard key `leaving` accepts and returns them as snapshots: the
   * state of slices this server no longer owns, to hand to their new owner. Counters that are as
   * good as new are dropped without a snapshot. One pass over every counter in one call: the
   * handoff uses `takeRanges`, which takes in slices.
   */
  takeCounters(leaving: (shard: string) => boolean, now: number): CounterSnapshot[] {
    const out: CounterSnapshot[] = [];
    for (const [key, c] of this.counters) {
      if (!leaving(c.shard)) continue;
      this.take(key, c, now, out);
    }
    return out;
  }

  private take(key: string, c: Counter, now: number, out: CounterSnapshot[]): void {
    this.counters.drop(key, c);
    c.leases?.sweep(now);
    if (c.expiresAt > now || (c.leases?.size ?? 0) > 0) out.push(snapshotCounter(key, c, now));
  }

  /**
   * Starts taking out the counters whose shard's point lies in `ranges` (disjoint), a slice per
   * `next` call.
   * With the index (`EngineOptions.pointOf`) it visits only the buckets overlapping the ranges;
   * without, it walks every counter and asks `pointOf` (which must agree with the engine's).
   * Counters added to the ranges while the take is under way may or may not be taken.
   */
  takeRanges(ranges: readonly PointRange[], pointOf: (shard: string) => number): CounterTake {
    const walk = this.counters.walkRanges(ranges, pointOf);
    return {
      next: (now, budget) => {
        const out: CounterSnapshot[] = [];
        const more = walk(budget, (key, c) => this.take(key, c, now, out));
        return { counters: out, more };
      },
    };
  }

  /**
   * Installs counters handed over by a previous owner (`handoff`), or restored from standby
   * copies (`standby`, `standby-until-handoff`). Returns how many were taken; past `maxCounters`
   * the rest are refused with a CapacityError.
   *
   * A handed-over counter is whole: the window totals gateways re-send afterwards are in it. A
   * key this server already counts (a handoff that came late) keeps whichever state has less
   * left, except over a provisional copy (below), which the handoff replaces.
   *
   * A copy is never newer than a counter already here (one a handoff brought first): that one
   * stays. A copy may miss up to one replication interval, so a windowed counter restored from one
   * stays open to gateways' re-sent totals, which raise it past what the copy held (`absorbed`); a
   * token bucket's tokens are no window count to compare totals with: its copy stands as it is.
   * `standby-until-handoff` copies are provisional: a handoff may still come for them (a restarted
   * server's ranges that the assignment also shows as given by a live member), and when it does it
   * replaces them whole. Its sender held the counter after the copy was made; merged by `fuller`,
   * the copy could win on a window start shifted by its time in transit and in the store.
   */
  putCounters(snapshots: readonly CounterSnapshot[], now: number, source: CounterSource = "handoff"): number {
    let n = 0;
    for (const s of snapshots) {
      const existing = this.counters.get(s.key);
      if (existing === undefined && this.counters.size >= this.maxCounters)
        throw new CapacityError(this.maxCounters);
      n++;
      if (source !== "handoff" && existing !== undefined) continue;
      const incoming = restoreCounter(s, now);
      const keep =
        existing === undefined || this.provisional.has(existing) ? incoming : fuller(existing, incoming);
      if (keep !== existing) this.counters.install(s.key, keep, existing);
      if (source === "handoff") keep.complete = true;
      else {
        if (keep.algorithm === "fixed_window" || keep.algorithm === "sliding_window") {
          keep.complete = false;
          this.floors.set(keep, { units: keep.x, t: keep.t });
        }
        if (source === "standby-until-handoff") this.provisional.add(keep);
      }
      // The new holder's buddy needs a copy too, changed here or not since.
      this.touch(s.key, keep);
    }
    return n;
  }

  /**
   * Drops counters that are as good as new (window over, bucket full, no holders, no reporting
   * gateway), visiting at most `budget` counters so a large table is swept in slices.
   */
  sweep(now: number, budget = 10_000): number {
    let removed = 0;
    let i = 0;
    // At the end of each pass over the counters the dedup table is swept, in slices of the same
    // budget: the pass under way finishes before the counters are visited again.
    if (this.dedup.sweeping) {
      i = this.dedup.sweepSlice(now - this.clientTtlMs, budget).visited;
      if (this.dedup.sweeping) return 0;
    }
    this.sweepCursor ??= this.counters.entries();
    for (; i < budget; i++) {
      const next = this.sweepCursor.next();
      if (next.done) {
        this.sweepCursor = undefined;
        if (i < budget) this.dedup.sweepSlice(now - this.clientTtlMs, budget - i);
        break;
      }
      const [key, c] = next.value;
      if (c.expiresAt > now) continue;
      if (c.leases && c.leases.size > 0) {
        c.leases.sweep(now);
        if (c.leases.size > 0) continue;
      }
      if (c.clients && c.clients.size > 0) {
        c.clients.pruneNow(now);
        if (c.clients.size > 0) continue;
      }
      // A paced sender keeps a bucket near full: the counter is as good as new, but what it knows
      // of its senders' demand is not, and a fresh one would let them all in until it relearned.
      if (c.contention?.active(now)) continue;
      this.counters.drop(key, c);
      removed++;
    }
    return removed;
  }
}

const DEFAULT_RANK = PRIORITY_RANK.normal;
/** Calls of up to this many items sum what earlier items take instead of keeping a Map. */
const SHORT_CALL = 8;

/**
 * How much of a gateway's reported refund (settled tickets' unused estimates) `c` takes back. A
 * windowed counter takes back at most what this gateway put into its current window, less what it
 * refunded there already: a refund never lowers another gateway's count, and one for a window that
 * has ended never adds capacity to the current one. (A gateway silent long enough to be pruned
 * starts again at zero: its late refunds are lost, which under-admits, never over.) A token bucket
 * takes any refund up to its burst.
 */
function refundable(c: Counter, l: Limit, s: ClientShare, used: number, asked: number): number {
  if (l.algorithm === "token_bucket") return asked;
  if (s.refundAt !== c.t) {
    s.refundAt = c.t;
    s.refundable = 0;
  }
  s.refundable += used;
  const refund = Math.min(asked, s.refundable);
  s.refundable -= refund;
  return refund;
}

/** Whether a decision must be divided by class and tenant rather than first come, first served. */
function contended(item: CheckItem, l: Limit): boolean {
  return (
    item.subject !== undefined ||
    (item.rank !== undefined && item.rank !== DEFAULT_RANK) ||
    l.fairShare !== undefined ||
    l.reserve !== undefined
  );
}

/**
 * Whether an item is counted as envoyproxy/ratelimit counts fixed windows (every hit, admitted or
 * not). Items decided together with another (a tenant and its fair-share group) are strict: a hit
 * the group refuses must not use up the tenant's window, nor the other way round.
 */
function envoyCounts(mode: CheckMode, item: CheckItem): boolean {
  return mode === "envoy" && item.limit.algorithm === "fixed_window" && item.tie === undefined;
}
