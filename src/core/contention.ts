import type { Counter } from "./counter.js";
import type { RejectReason } from "./decision.js";
import { headroom, weightedWaterLevel } from "./fair-share.js";
import type { Limit } from "./limit.js";
import { PRIORITIES } from "./priority.js";

/**
 * Who gets a contended limit, decided request by request (synchronous `Check` and
 * `ShouldRateLimit`). A counter alone is first come, first served: a heavy sender that arrives
 * first takes what a light one, or a critical request a moment later, needed. Here the owner
 * measures each subject's demand (a subject is a priority class, and within a class the tenant
 * a `fair_share` limit divides by) and divides the limit's rate:
 *
 * - classes in order, highest first; a class takes at most the limit less what `reserve` keeps
 *   for the classes above it;
 * - within a class, weighted max-min fair among tenants: a tenant asking less than its share gets
 *   all it asks, the heavier ones split the rest by weight;
 * - a soft child over its own limit borrows in a class below `low`: first to give way.
 *
 * A subject that asks more than its share ("bottlenecked") is paced at its share and may only
 * take units beyond the expected demand of everyone ahead of it (higher classes, and the
 * subjects of its class within their share) over the counter's horizon. Everyone else is admitted
 * as long as the counter allows, less what higher classes are expected to need. Uncontended,
 * nobody is bottlenecked and nobody is held back.
 */

/** Rank of a soft child's borrowing: below every class. */
export const BORROW_RANK = -1;
/** Ranks from BORROW_RANK to the highest class. */
const RANKS = PRIORITIES.length + 1;
/** Time constant of a subject's measured demand. */
const DEMAND_TAU_MS = 500;
/** How long a computed division is reused. */
const PLAN_TTL_MS = 10;
/** A paced subject may run this far ahead of its share (or a twentieth of a longer window). */
const PACE_BURST_MS = 100;

function paceBurst(alloc: number, l: Limit): number {
  return Math.max(alloc * Math.max(PACE_BURST_MS, l.windowMs / 20), 1);
}
/**
 * How far ahead a token bucket keeps units for the subjects ahead of a paced one: refill
 * replenishes the rest. A window keeps them for what is left of the window.
 */
const BUCKET_HORIZON_MS = 200;
/** Subjects forgotten after this long without a request. */
const IDLE_MS = 10 * DEMAND_TAU_MS;
/** Subjects tracked one by one per counter; past it, new ones share one entry per class. */
export const MAX_SUBJECTS = 4096;
const OTHERS = "\u0000others";

/** One subject's state on one counter. */
export class Subject {
  /** Offered units per ms (admitted or not), smoothed over DEMAND_TAU_MS, as of `at`. */
  rate = 0;
  at: number;
  /** The share it is paced at (units per ms) while bottlenecked; Infinity otherwise. */
  alloc = Number.POSITIVE_INFINITY;
  tokens = 0;
  paceAt: number;

  constructor(
    readonly id: string,
    readonly rank: number,
    public weight: number,
    now: number,
  ) {
    this.at = now;
    this.paceAt = now;
  }

  demand(now: number): number {
    return now > this.at ? this.rate * Math.exp((this.at - now) / DEMAND_TAU_MS) : this.rate;
  }
}

export class Contention {
  private readonly subjects = new Map<string, Subject>();
  private planAt = Number.NEGATIVE_INFINITY;
  /** Per rank (index rank + 1): demand of the ranks above it, and of its subjects within share. */
  private readonly above = new Float64Array(RANKS);
  private readonly free = new Float64Array(RANKS);
  /** Per rank: how many subjects the last plan divided it among. */
  private readonly members = new Uint32Array(RANKS);
  /** Whether more than one tenant (or class-only sender) asks: else nobody needs pacing. */
  private shared = false;
  /** Per rank: the fraction of the limit kept for the classes above it. */
  private readonly reserved = new Float64Array(RANKS);
  private readonly scratch = { demands: [] as number[], weights: [] as number[], order: [] as number[] };

  get size(): number {
    return this.subjects.size;
  }

  /** Whether some subject asked within IDLE_MS: its demand and pacing still matter. */
  active(now: number): boolean {
    for (const s of this.subjects.values()) if (now - s.at <= IDLE_MS) return true;
    return false;
  }

  /** Records that `id` of class `rank` asks for `cost` units now; returns its entry. */
  offer(id: string, rank: number, weight: number, cost: number, now: number): Subject {
    let key = `${rank}:${id}`;
    let s = this.subjects.get(key);
    if (s === undefined) {
      if (this.subjects.size >= MAX_SUBJECTS) {
        key = `${rank}:${OTHERS}`;
        s = this.subjects.get(key);
      }
      if (s === undefined) {
        s = new Subject(key.endsWith(OTHERS) ? OTHERS : id, rank, weight, now);
        this.subjects.set(key, s);
        this.planAt = Number.NEGATIVE_INFINITY; // a newcomer may change the division at once
      }
    }
    s.weight = weight;
    s.rate = s.demand(now) + cost / DEMAND_TAU_MS;
    s.at = now;
    return s;
  }

  /**
   * Whether `s` may take `cost` units now, given `available` on the counter (what this call's
   * earlier items took already deducted). Changes nothing: `took` records an admission.
   */
  admits(s: Subject, cost: number, available: number, c: Counter, l: Limit, now: number): boolean {
    this.plan(l, now);
    const i = s.rank + 1;
    const horizon = horizonMs(c, l, now);
    const base = l.algorithm === "token_bucket" ? l.burst : l.limit;
    let above = this.above[i]!;
    if (s.rank === BORROW_RANK) {
      // A borrowing tenant does not keep room for its own requests in the classes above: once its
      // own limit is spent, those borrow too.
      for (let r = 0; r < RANKS - 1; r++) above -= this.subjects.get(`${r}:${s.id}`)?.demand(now) ?? 0;
    }
    let ahead = horizon * Math.max(0, above);
    if (s.alloc !== Number.POSITIVE_INFINITY) {
      // Bottlenecked: behind the subjects of its class that ask less than their share, and paced
      // at its share (others then get theirs evenly through the window, and several bottlenecked
      // ones split by weight). Alone on the counter with nothing reserved it is not held back:
      // nobody would get what it leaves.
      ahead += horizon * this.free[i]!;
      if (this.shared || this.reserved[i]! > 0) {
        this.refill(s, l, now);
        if (s.tokens < cost) return false;
      }
    }
    return available >= cost + base * this.reserved[i]! + headroom(ahead);
  }

  /**
   * Why `admits` said no, in its own figures: read after a rejection only (nothing on the path of
   * an admission). Changes nothing (the refill it repeats at the same `now` adds nothing).
   */
  why(s: Subject, cost: number, available: number, c: Counter, l: Limit, now: number): RejectReason {
    const subject = s.id === OTHERS ? "(others)" : s.id;
    const base = { cost, available, subject, rank: s.rank, demand: s.demand(now) * 1000 };
    if (available < cost) return { kind: "over_limit", ...base };
    const i = s.rank + 1;
    if (s.alloc !== Number.POSITIVE_INFINITY && (this.shared || this.reserved[i]! > 0)) {
      this.refill(s, l, now);
      if (s.tokens < cost) {
        // A tenant over its share among the tenants of its class is fair share; a class (or a
        // borrowing tenant) over what the classes above leave it is priority shedding.
        const tenants = this.tenantsOf(s.rank);
        const kind = s.id !== "" && s.rank !== BORROW_RANK && tenants > 1 ? "fair_share" : "priority";
        // Paced at its share: room again when the pace has put the cost back, not sooner.
        const paceMs = s.alloc > 0 ? (cost - s.tokens) / s.alloc : undefined;
        return { kind, ...base, share: s.alloc * 1000, ...(paceMs !== undefined ? { paceMs } : {}) };
      }
    }
    // Units there, but held for those ahead: the classes above (reserve, expected demand) and,
    // for a subject over its share, the subjects of its class within theirs.
    const paced = s.alloc !== Number.POSITIVE_INFINITY;
    const baseUnits = l.algorithm === "token_bucket" ? l.burst : l.limit;
    const ahead = this.above[i]! + (paced ? this.free[i]! : 0);
    const kept = baseUnits * this.reserved[i]! + headroom(horizonMs(c, l, now) * Math.max(0, ahead));
    const fair = paced && s.id !== "" && s.rank !== BORROW_RANK && this.tenantsOf(s.rank) > 1;
    return fair
      ? { kind: "fair_share", ...base, kept, share: s.alloc * 1000 }
      : { kind: "priority", ...base, kept };
  }

  /** How many subjects of class `rank` the last plan divided it among. */
  private tenantsOf(rank: number): number {
    return this.members[rank + 1]!;
  }

  /** `s` was admitted `cost` units. */
  took(s: Subject, cost: number): void {
    if (s.alloc !== Number.POSITIVE_INFINITY) s.tokens -= cost;
  }

  private refill(s: Subject, l: Limit, now: number): void {
    const cap = paceBurst(s.alloc, l);
    s.tokens = Math.min(cap, s.tokens + (now - s.paceAt) * s.alloc);
    s.paceAt = now;
  }

  /** Divides the limit's rate among the subjects' demand (cached for PLAN_TTL_MS). */
  private plan(l: Limit, now: number): void {
    if (now - this.planAt < PLAN_TTL_MS && now >= this.planAt) return;
    this.planAt = now;
    const byRank: Subject[][] = Array.from({ length: RANKS }, () => []);
    // Shared: two senders or more, a tenant's borrowing not counting as another sender.
    let someone: string | undefined;
    let classes = 0;
    this.shared = false;
    for (const [key, s] of this.subjects) {
      someone ??= s.id;
      if (s.id !== someone) this.shared = true;
      if (s.rank !== BORROW_RANK && ++classes > 1) this.shared = true;
      if (now - s.at > IDLE_MS) this.subjects.delete(key);
      else byRank[s.rank + 1]!.push(s);
    }
    const supply = l.limit / l.windowMs;
    let keptAbove = 0;
    let left = supply;
    let demandAbove = 0;
    const { demands, weights, order } = this.scratch;
    for (let i = RANKS - 1; i >= 0; i--) {
      // The borrowing rank (i = 0) stands behind `low` and is held to low's reserve.
      if (i < RANKS - 1 && i > 0) keptAbove += reserveOf(l, i); // classes above rank i - 1
      this.reserved[i] = keptAbove;
      this.above[i] = demandAbove;
      const cap = Math.max(0, Math.min(left, supply * (1 - keptAbove)));
      const list = byRank[i]!;
      this.members[i] = list.length;
      demands.length = 0;
      weights.length = 0;
      let total = 0;
      for (const s of list) {
        const d = s.demand(now);
        demands.push(d);
        weights.push(s.weight);
        total += d;
      }
      const level = weightedWaterLevel(demands, weights, cap, order);
      let free = 0;
      for (let k = 0; k < list.length; k++) {
        const s = list[k]!;
        const share = weights[k]! * level;
        if (demands[k]! > share) {
          if (s.alloc === Number.POSITIVE_INFINITY) {
            s.tokens = paceBurst(share, l); // starts with a pace burst's worth
            s.paceAt = now;
          } else this.refill(s, l, now);
          s.alloc = share;
        } else {
          s.alloc = Number.POSITIVE_INFINITY;
          free += demands[k]!;
        }
      }
      this.free[i] = free;
      left -= Math.min(total, cap);
      demandAbove += total;
    }
  }
}

/** The reserve a limit keeps for the class of rank `i`, which stands just above index `i`'s rank. */
function reserveOf(l: Limit, i: number): number {
  const p = PRIORITIES[i];
  return p === undefined ? 0 : (l.reserve?.[p] ?? 0);
}

/**
 * Over how long the demand of those ahead is kept free: what is left of a window (its units do
 * not come back before it ends), or a short span for a bucket, whose refill brings them back.
 */
function horizonMs(c: Counter, l: Limit, now: number): number {
  if (l.algorithm === "token_bucket") return Math.min(l.windowMs, BUCKET_HORIZON_MS);
  return Math.max(0, c.t + l.windowMs - now);
}
