import { ClientTable } from "./clients.js";
import { weightedWaterLevel } from "./fair-share.js";

/**
 * Batched mode under a `fair_share` limit: the gateways reporting a group's counter, by tenant.
 * The group's supply is divided among tenants first (weighted max-min over each tenant's demand,
 * the sum of its gateways'), then each tenant's part among its own gateways (the ClientTable's
 * max-min). A tenant with many gateways gets no more than one with few.
 */

/** Tenants tracked one by one per group counter; past it, new ones share one entry. */
export const MAX_TENANTS = 4096;
const OTHERS = "\u0000others";
/** How long a computed tenant water level may be reused. */
const LEVEL_TTL_MS = 10;
const PRUNE_EVERY_MS = 1000;

export class TenantShare {
  weight = 1;
  /** This tenant's gateways on the group counter. */
  readonly gateways = new ClientTable();
}

export class TenantTable {
  private readonly tenants = new Map<string, TenantShare>();
  private level = Number.POSITIVE_INFINITY;
  private levelAt = Number.NEGATIVE_INFINITY;
  private levelCapacity = Number.NaN;
  /** The tenants' demand and weight together, as of `levelAt`. */
  private total = 0;
  private weight = 0;
  private free = 0;
  private prunedAt = Number.NEGATIVE_INFINITY;
  private readonly scratch = { demands: [] as number[], weights: [] as number[], order: [] as number[] };

  get size(): number {
    return this.tenants.size;
  }

  upsert(tenant: string, weight: number): TenantShare {
    let t = this.tenants.get(tenant);
    if (t === undefined) {
      const key = this.tenants.size >= MAX_TENANTS ? OTHERS : tenant;
      t = this.tenants.get(key);
      if (t === undefined) {
        t = new TenantShare();
        this.tenants.set(key, t);
        this.levelAt = Number.NEGATIVE_INFINITY;
      }
    }
    t.weight = weight;
    return t;
  }

  /**
   * Tenant `t`'s part of `capacity` (units per ms). Under the capacity each tenant gets its
   * demand plus a part of the surplus by weight; over it, weighted max-min.
   */
  share(t: TenantShare, capacity: number, now: number): number {
    this.refresh(capacity, now);
    const own = demandOf(t, now);
    return this.total <= capacity
      ? own + ((capacity - this.total) * t.weight) / this.weight
      : Math.min(own, t.weight * this.level);
  }

  /** What the tenants within their share of `capacity` ask for together (units per ms, measured). */
  freeDemand(capacity: number, now: number, except?: TenantShare): number {
    this.refresh(capacity, now);
    const own = except !== undefined && this.within(except, capacity, now) ? demandOf(except, now) : 0;
    return Math.max(0, this.free - own);
  }

  /** What all the tenants ask for together (units per ms, measured). */
  demand(now: number): number {
    let sum = 0;
    for (const t of this.tenants.values()) sum += demandOf(t, now);
    return sum;
  }

  /** Whether tenant `t` asks for no more than its share of `capacity`. */
  within(t: TenantShare, capacity: number, now: number): boolean {
    this.refresh(capacity, now);
    return demandOf(t, now) <= t.weight * this.level;
  }

  /**
   * Totals and the level, recomputed at most every LEVEL_TTL_MS (each is a pass over the
   * tenants), or at once when the capacity moved or a tenant came or went.
   */
  private refresh(capacity: number, now: number): void {
    const fresh = now - this.levelAt <= LEVEL_TTL_MS && now >= this.levelAt;
    if (fresh && Math.abs(capacity - this.levelCapacity) <= capacity * 0.02) return;
    const { demands, weights, order } = this.scratch;
    demands.length = 0;
    weights.length = 0;
    let demand = 0;
    let weight = 0;
    for (const x of this.tenants.values()) {
      const d = demandOf(x, now);
      demands.push(d);
      weights.push(x.weight);
      demand += d;
      weight += x.weight;
    }
    const level = weightedWaterLevel(demands, weights, capacity, order);
    let free = 0;
    for (let i = 0; i < demands.length; i++) if (demands[i]! <= weights[i]! * level) free += demands[i]!;
    this.total = demand;
    this.weight = weight;
    this.level = level;
    this.free = free;
    this.levelCapacity = capacity;
    this.levelAt = now;
  }

  /** Forgets gateways not heard from for `staleMs`, and tenants left with none (at most once a second). */
  prune(now: number, staleMs: number): void {
    if (now - this.prunedAt < PRUNE_EVERY_MS && now >= this.prunedAt) return;
    this.prunedAt = now;
    for (const [id, t] of this.tenants) {
      t.gateways.prune(now, staleMs);
      if (t.gateways.size === 0) {
        this.tenants.delete(id);
        this.levelAt = Number.NEGATIVE_INFINITY;
      }
    }
  }
}

/**
 * A tenant's demand (units per ms): the smaller of its gateways' own estimates and the rate
 * measured at the counter. A gateway's estimate rises at once and falls slowly, and a sparse
 * sender that reports early over short spans reads several times its rate; twenty gateways each
 * carrying a little of a light tenant would make it look heavy. The measured rate is not fooled.
 */
function demandOf(t: TenantShare, now: number): number {
  return Math.min(t.gateways.sumDemand, t.gateways.offeredRate(now));
}
