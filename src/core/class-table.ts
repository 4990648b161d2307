import { RATE_ALGORITHMS } from "./algorithms/index.js";
import { Counter } from "./counter.js";
import type { Limit } from "./limit.js";
import { PRIORITIES } from "./priority.js";
import { TenantTable } from "./tenant-table.js";

/**
 * Batched mode with priority classes: the gateways reporting a counter, by class, each class's by
 * tenant (one tenant, "", when the limit has no `fair_share`). The supply goes to the classes
 * highest first, each taking at most the limit less what `reserve` keeps for the classes above
 * it; a class's part is then divided among its tenants (weighted max-min), a tenant's among its
 * gateways. What the classes leave is shared among them, within the same caps.
 */

const RANKS = PRIORITIES.length;
/** How long a computed division is reused. */
const PLAN_TTL_MS = 10;

export class ClassTable {
  /** Per rank (`PRIORITY_RANK`), the class's tenants; made on first use. */
  private readonly classes: (TenantTable | undefined)[] = new Array(RANKS).fill(undefined);
  private readonly parts = new Float64Array(RANKS);
  private readonly demands = new Float64Array(RANKS);
  private planAt = Number.NEGATIVE_INFINITY;
  /** Per rank: the shadow counter of its reserve cap, and the capped limit it runs on. */
  private readonly shadows: (Counter | undefined)[] = new Array(RANKS).fill(undefined);
  private readonly capped: ({ of: Limit; limit: Limit } | undefined)[] = new Array(RANKS).fill(undefined);
  private planCapacity = Number.NaN;

  /** The tenants of class `rank`. */
  tenants(rank: number): TenantTable {
    let t = this.classes[rank];
    if (t === undefined) {
      t = new TenantTable();
      this.classes[rank] = t;
      this.planAt = Number.NEGATIVE_INFINITY;
    }
    return t;
  }

  /** Class `rank`'s part of `capacity` (units per ms). */
  part(rank: number, capacity: number, l: Limit, now: number): number {
    this.plan(capacity, l, now);
    return this.parts[rank]!;
  }

  /** Whether class `rank` asks for no more than its part of `capacity`. */
  within(rank: number, capacity: number, l: Limit, now: number): boolean {
    this.plan(capacity, l, now);
    return this.demands[rank]! <= this.parts[rank]! * 1.001;
  }

  /** What the classes above `rank` ask for together (units per ms, measured). */
  above(rank: number, capacity: number, l: Limit, now: number): number {
    this.plan(capacity, l, now);
    let sum = 0;
    for (let r = rank + 1; r < RANKS; r++) sum += this.demands[r]!;
    return sum;
  }

  /** The fraction of the limit the classes above `rank` keep (`reserve`). */
  reservedAbove(rank: number, l: Limit): number {
    let kept = 0;
    for (let r = rank + 1; r < RANKS; r++) kept += l.reserve?.[PRIORITIES[r]!] ?? 0;
    return kept;
  }

  /**
   * Counts `units` admitted in class `rank` against the reserve caps: each class whose part is
   * capped by a reserve above it has a shadow of the limit (the same algorithm at the capped rate
   * and size) that the units of it and every class below it use up.
   */
  charge(rank: number, units: number, l: Limit, now: number): void {
    if (units === 0 || l.algorithm === "concurrency") return;
    const alg = RATE_ALGORITHMS[l.algorithm];
    for (let r = rank; r < RANKS; r++) {
      const capped = this.cappedLimit(r, l);
      if (capped === undefined) continue;
      const shadow = this.shadowOf(r, capped, now);
      alg.advance(shadow, capped, now);
      alg.consume(shadow, capped, units, now);
    }
  }

  /**
   * What class `rank` may still spend under the reserve kept above it, and the rate that comes
   * back (units per ms); undefined when nothing is reserved above it.
   */
  capOf(rank: number, l: Limit, now: number): { avail: number; refill: number } | undefined {
    const capped = this.cappedLimit(rank, l);
    if (capped === undefined || l.algorithm === "concurrency") return undefined;
    const alg = RATE_ALGORITHMS[l.algorithm];
    const shadow = this.shadowOf(rank, capped, now);
    alg.advance(shadow, capped, now);
    return { avail: alg.available(shadow, capped, now), refill: alg.refillPerMs(shadow, capped, now) };
  }

  private cappedLimit(rank: number, l: Limit): Limit | undefined {
    const kept = this.reservedAbove(rank, l);
    if (kept <= 0) return undefined;
    let capped = this.capped[rank];
    if (capped === undefined || capped.of !== l) {
      capped = {
        of: l,
        limit: { ...l, limit: l.limit * (1 - kept), burst: l.burst * (1 - kept), reserve: undefined },
      };
      this.capped[rank] = capped;
    }
    return capped.limit;
  }

  private shadowOf(rank: number, capped: Limit, now: number): Counter {
    let c = this.shadows[rank];
    if (c === undefined || c.algorithm !== capped.algorithm) {
      c = new Counter(capped.algorithm);
      RATE_ALGORITHMS[capped.algorithm as keyof typeof RATE_ALGORITHMS].init(c, capped, now);
      this.shadows[rank] = c;
    }
    return c;
  }

  prune(now: number, staleMs: number): void {
    for (const t of this.classes) t?.prune(now, staleMs);
  }

  private plan(capacity: number, l: Limit, now: number): void {
    const fresh = now - this.planAt <= PLAN_TTL_MS && now >= this.planAt;
    if (fresh && Math.abs(capacity - this.planCapacity) <= capacity * 0.02) return;
    this.planAt = now;
    this.planCapacity = capacity;
    let left = capacity;
    let present = 0;
    // Highest first: each class its demand, up to what is left and to its cap.
    for (let r = RANKS - 1; r >= 0; r--) {
      const d = this.classes[r]?.demand(now) ?? 0;
      this.demands[r] = d;
      if (d > 0) present++;
      const cap = Math.max(0, Math.min(left, capacity * (1 - this.reservedAbove(r, l))));
      const part = Math.min(d, cap);
      this.parts[r] = part;
      left -= part;
    }
    // What is left is shared evenly among the classes that ask, each within its cap; the rest,
    // highest first.
    if (left > 0 && present > 0) {
      const even = left / present;
      for (let r = RANKS - 1; r >= 0 && left > 0; r--) {
        if (this.demands[r]! <= 0) continue;
        const room = capacity * (1 - this.reservedAbove(r, l)) - this.parts[r]!;
        const add = Math.max(0, Math.min(even, room, left));
        this.parts[r]! += add;
        left -= add;
      }
      for (let r = RANKS - 1; r >= 0 && left > 0; r--) {
        if (this.demands[r]! <= 0) continue;
        const room = capacity * (1 - this.reservedAbove(r, l)) - this.parts[r]!;
        const add = Math.max(0, Math.min(room, left));
        this.parts[r]! += add;
        left -= add;
      }
    }
  }
}
