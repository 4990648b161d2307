import { waterLevel } from "./fair-share.js";

/** One gateway's view of one key, as the owner keeps it for batched mode. */
export class ClientShare {
  /** Offered units per ms (admitted + rejected), smoothed: rises at once, decays gradually. */
  demand = 0;
  lastSeen = 0;
  /** Concurrency: units this client holds now (it reports the absolute number). */
  held = 0;
  /** Whether a re-sent window-to-date total from this client was already folded in. */
  rebuilt = false;
  /** Units consumed from this client's reports on this counter since the counter was made. */
  counted = 0;
  /**
   * Windowed counters: units this client put into the window starting at `refundAt`, less what it
   * refunded there; the most its refunds may take back (see the engine's `refundable`).
   */
  refundable = 0;
  refundAt = Number.NaN;
  reports = 0;
  /** The fraction of a unit left over from rounding this client's last paced grant down. */
  carry = 0;
  /** The most units one report of this client brought lately (decays over PEAK_TAU_MS). */
  peak = 0;
  peakAt = 0;

  /** As new (a pruned gateway's entry, taken again for the next one: see ClientTable.spare). */
  reset(): this {
    this.demand = 0;
    this.lastSeen = 0;
    this.held = 0;
    this.rebuilt = false;
    this.counted = 0;
    this.refundable = 0;
    this.refundAt = Number.NaN;
    this.reports = 0;
    this.carry = 0;
    this.peak = 0;
    this.peakAt = 0;
    return this;
  }
}

/** Weight of a new measurement when demand falls; a rise is taken at once so a shift is met fast. */
const DEMAND_DECAY = 0.3;
/** Time constant of the key's total offered rate. */
const RATE_TAU_MS = 1000;
const FAST_TAU_MS = 250;
const PEAK_TAU_MS = 5000;
// `offered` derives the two faster decays from the slowest by powers: 5000 = 5 x 1000 = 20 x 250.
/** How long the cached water level may be reused by other clients' reports. */
const LEVEL_TTL_MS = 10;

/**
 * Gateways tracked one by one per key. A fair-share pass costs O(n log n) in them (at most once
 * per LEVEL_TTL_MS per key), a prune O(n), a handoff snapshot O(n) bytes: the bound keeps each of
 * those bounded however many client ids report a key.
 */
export const DEFAULT_MAX_CLIENTS_PER_KEY = 4096;

/**
 * The gateways reporting one key, with running sums so each report costs O(1) on average. Most
 * keys are reported by one gateway: it is held inline, and a Map is made only for a second one.
 *
 * At most `maxClients` gateways are tracked one by one. A gateway past that is folded into one
 * aggregate ("others"): its counts are consumed like any other's (the counter is exact), but it
 * has no entry of its own. The aggregate's demand and holds are estimated from the rate of its
 * reports (each gateway reports a key once per interval), and it takes part in the max-min
 * division as one client, whose share its members split evenly: all gateways together are never
 * offered more than the capacity, at the cost of fairness to the folded ones only.
 */
export class ClientTable {
  private soleId: string | undefined = undefined;
  private sole: ClientShare | undefined = undefined;
  /**
   * The sole gateway's entry after a prune, reused when a gateway reports the key again. A key
   * reported less often than the staleness (most of a million keys) would otherwise get a new
   * entry on every report, each one surviving into the old generation: the bulk of the young
   * generation's copying at 1M counters.
   */
  private spare: ClientShare | undefined = undefined;
  private many: Map<string, ClientShare> | undefined = undefined;
  sumDemand = 0;
  sumHeld = 0;
  /** Units offered per ms by all clients together, smoothed over RATE_TAU_MS and FAST_TAU_MS. */
  private rate = 0;
  private fast = 0;
  private rateAt = Number.NEGATIVE_INFINITY;
  /** The largest single report's offered units lately (decays over PEAK_TAU_MS). */
  private peak = 0;
  /** The max-min water level, made on the first division among several gateways. */
  private water: WaterLevel | undefined = undefined;
  private prunedAt = 0;
  /** The staleness the table was last pruned with, so a sweep can prune it the same way. */
  staleMs = 0;
  /**
   * The gateways past `maxClients`, together; made on the first one. Kept out of the table
   * itself: a table is made for every key, and its size is what a million keys keep in memory
   * and what batched ingest reads per report entry.
   */
  private folded: Folded | undefined = undefined;

  constructor(readonly maxClients = DEFAULT_MAX_CLIENTS_PER_KEY) {}

  /** Gateways tracked one by one (at most `maxClients`). */
  get tracked(): number {
    return this.many !== undefined ? this.many.size : this.sole !== undefined ? 1 : 0;
  }

  /** Gateways reporting the key: the tracked ones, and an estimate of how many are folded. */
  get size(): number {
    return this.tracked + (this.folded !== undefined ? this.folded.count() : 0);
  }

  upsert(clientId: string, now: number): ClientShare {
    let s: ClientShare | undefined;
    if (this.many !== undefined) {
      s = this.many.get(clientId);
      if (s === undefined && this.many.size >= this.maxClients) return this.fold(now);
      if (s === undefined) {
        s = new ClientShare();
        this.many.set(clientId, s);
        this.staleLevel();
      }
    } else if (this.sole === undefined) {
      s = this.sole = this.spare?.reset() ?? new ClientShare();
      this.spare = undefined;
      this.soleId = clientId;
    } else if (this.soleId === clientId) {
      s = this.sole;
    } else if (this.maxClients <= 1) {
      return this.fold(now);
    } else {
      s = new ClientShare();
      this.many = new Map([
        [this.soleId!, this.sole],
        [clientId, s],
      ]);
      this.sole = undefined;
      this.soleId = undefined;
      this.staleLevel();
    }
    s.lastSeen = now;
    return s;
  }

  /** The aggregate share of the gateways past `maxClients`. */
  private fold(now: number): ClientShare {
    if (this.folded === undefined) {
      this.folded = new Folded();
      this.staleLevel();
    }
    this.folded.share.lastSeen = now;
    return this.folded.share;
  }

  /** The cached water level no longer holds (a gateway came or went). */
  private staleLevel(): void {
    if (this.water !== undefined) this.water.at = Number.NEGATIVE_INFINITY;
  }

  /**
   * The numbers a report from `clientId` reads, summed: loads them into the cache ahead of
   * counting (see server/read-ahead.ts). Changes nothing.
   */
  readAhead(clientId: string): number {
    let sum = this.prunedAt + this.staleMs + this.sumDemand + this.rate + this.fast + this.rateAt + this.peak;
    // Keys reported by several gateways (each of a fleet's replicas reports the hot keys) keep
    // the shares in a Map: its look-up is the one more link of the chain.
    const s = this.sole ?? this.many?.get(clientId);
    if (s !== undefined)
      sum += s.demand + s.lastSeen + s.counted + s.refundable + s.carry + s.peak + s.peakAt + s.reports;
    return sum;
  }

  /** Tracked gateways only: the folded ones have no id of their own (a snapshot leaves them out). */
  forEach(fn: (id: string, s: ClientShare) => void): void {
    if (this.many !== undefined) for (const [id, s] of this.many) fn(id, s);
    else if (this.sole !== undefined) fn(this.soleId!, this.sole);
  }

  /**
   * Folds in one report's offered rate over `intervalMs`. A fall is smoothed when it could be
   * arrival noise; a fall far beyond that (more than three Poisson deviations of the expected
   * count) is demand that moved away, taken at once so its share goes to where it moved.
   */
  observe(s: ClientShare, offeredPerMs: number, intervalMs: number): void {
    if (this.folded !== undefined && s === this.folded.share) {
      this.observeFolded(this.folded, offeredPerMs, intervalMs);
      return;
    }
    const units = offeredPerMs * intervalMs;
    const since = s.lastSeen - s.peakAt;
    // exp(-0) is 1: no call for a report in the same ms (Math.exp is a call, and this runs per entry).
    s.peak = Math.max(units, since > 0 ? s.peak * Math.exp(-since / PEAK_TAU_MS) : s.peak);
    s.peakAt = s.lastSeen;
    let next: number;
    if (s.reports === 0 || offeredPerMs >= s.demand) next = offeredPerMs;
    else {
      const expected = s.demand * intervalMs;
      const drop = expected - offeredPerMs * intervalMs;
      next =
        drop > 3 * Math.sqrt(expected) + 1
          ? offeredPerMs
          : s.demand + DEMAND_DECAY * (offeredPerMs - s.demand);
    }
    this.sumDemand += next - s.demand;
    s.demand = next;
    s.reports++;
  }

  /** One folded gateway's report: its offered rate is added to the aggregate's smoothed totals. */
  private observeFolded(f: Folded, offeredPerMs: number, intervalMs: number): void {
    const s = f.share;
    const span = Math.max(1, intervalMs);
    f.decay(s.lastSeen, span);
    const tau = Math.max(RATE_TAU_MS, 4 * span);
    f.span = span;
    f.reports += 1 / tau;
    f.offered += (offeredPerMs * span) / tau;
    const total = f.offered;
    this.sumDemand += total - f.demand;
    f.demand = total;
    s.demand = total / f.count();
    s.reports++;
  }

  /**
   * Adds units offered (admitted + rejected) in one report to the key's total offered rate. The
   * per-client demands are rates over one interval, which a client sending rare bursts inflates
   * many times over; the total measured at the counter is not fooled by that.
   */
  offered(units: number, now: number): void {
    const dt = this.rateAt === Number.NEGATIVE_INFINITY ? 0 : now - this.rateAt;
    if (dt === 0) {
      // The decays are exp(-0) = 1: the same sums without the three calls.
      this.rate = this.rate + units / RATE_TAU_MS;
      this.fast = this.fast + units / FAST_TAU_MS;
      this.peak = Math.max(units, this.peak);
    } else {
      // One exp for the three decays (this runs per report entry): the time constants are
      // multiples of each other, exp(-dt/1000) = exp(-dt/5000)^5 and exp(-dt/250) = that ^4.
      const slow = Math.exp(-dt / PEAK_TAU_MS);
      const s2 = slow * slow;
      const rateDecay = s2 * s2 * slow;
      const r2 = rateDecay * rateDecay;
      this.rate = this.rate * rateDecay + units / RATE_TAU_MS;
      this.fast = this.fast * (r2 * r2) + units / FAST_TAU_MS;
      this.peak = Math.max(units, this.peak * slow);
    }
    this.rateAt = now;
  }

  /** The smoothed total offered rate at `now`, units per ms. */
  offeredRate(now: number): number {
    if (this.rateAt === Number.NEGATIVE_INFINITY) return 0;
    const dt = now - this.rateAt;
    // The slow average is steady for bursty senders; the fast one sees a surge within a few
    // reports. The larger of the two errs on the side of rationing. Asked in the ms of the last
    // report (a report's own policy), the decays are 1.
    if (dt === 0) return Math.max(this.rate, this.fast);
    return Math.max(this.rate * Math.exp(-dt / RATE_TAU_MS), this.fast * Math.exp(-dt / FAST_TAU_MS));
  }

  /** The largest single report's offered units lately: how big a burst one gateway brings. */
  peakReport(now: number): number {
    if (this.rateAt === Number.NEGATIVE_INFINITY) return 0;
    if (now === this.rateAt) return this.peak;
    return this.peak * Math.exp(-(now - this.rateAt) / PEAK_TAU_MS);
  }

  setHeld(s: ClientShare, held: number): void {
    const f = this.folded;
    if (f !== undefined && s === f.share) {
      // Each folded gateway reports its own absolute holds: their sum is estimated as the rate
      // of held units reported times the interval (each reports once per interval).
      f.decay(s.lastSeen, f.span);
      f.heldRate += held / Math.max(RATE_TAU_MS, 4 * f.span);
      const total = Math.max(held, f.heldRate * f.span);
      this.sumHeld += total - f.held;
      f.held = total;
      s.held = total / f.count();
      return;
    }
    this.sumHeld += held - s.held;
    s.held = held;
  }

  /** Drops clients not heard from since `now - staleMs`; their demand and holds stop counting. */
  prune(now: number, staleMs: number): void {
    this.staleMs = staleMs;
    if (now - this.prunedAt < staleMs / 4) return;
    this.pruneNow(now);
  }

  pruneNow(now: number): void {
    this.prunedAt = now;
    const cutoff = now - this.staleMs;
    if (this.many === undefined) {
      if (this.sole !== undefined && this.sole.lastSeen < cutoff) {
        this.spare = this.sole;
        this.sole = undefined;
        this.soleId = undefined;
      }
    } else {
      for (const [id, s] of this.many) {
        if (s.lastSeen < cutoff) {
          this.many.delete(id);
          this.sumDemand -= s.demand;
          this.sumHeld -= s.held;
          this.staleLevel();
        }
      }
    }
    if (this.folded !== undefined && this.folded.share.lastSeen < cutoff) {
      this.sumDemand -= this.folded.demand;
      this.sumHeld -= this.folded.held;
      this.folded = undefined;
      this.staleLevel();
    }
    if (this.size === 0) {
      // Running sums drift by float rounding; an empty table resets them exactly.
      this.sumDemand = 0;
      this.sumHeld = 0;
    }
  }

  /**
   * This client's fair share of `capacity` (units per ms). Under the capacity every client gets
   * its demand plus an equal part of the surplus, so none is starved and growth is possible;
   * over it, max-min fairness: a heavy client cannot crowd out light ones.
   */
  fairShare(s: ClientShare, capacity: number, now: number): number {
    const n = this.size;
    if (this.sumDemand <= capacity) return s.demand + (capacity - this.sumDemand) / n;
    const f = this.folded;
    if (f === undefined && this.many === undefined) return capacity;
    const level = this.levelFor(capacity, now).level;
    if (f !== undefined && s === f.share) return Math.min(f.demand, level) / f.count();
    return Math.min(s.demand, level);
  }

  /**
   * The demand of the clients that ask no more than their share of `capacity` (units per ms):
   * what a heavy client must leave for them.
   */
  freeDemand(capacity: number, now: number): number {
    if (this.sumDemand <= capacity) return this.sumDemand;
    if (this.folded === undefined && this.many === undefined) return 0;
    return this.levelFor(capacity, now).free;
  }

  private levelFor(capacity: number, now: number): WaterLevel {
    this.water ??= new WaterLevel();
    const w = this.water;
    if (now - w.at <= LEVEL_TTL_MS && Math.abs(capacity - w.capacity) <= capacity * 0.02) return w;
    const demands: number[] = [];
    if (this.many !== undefined) for (const c of this.many.values()) demands.push(c.demand);
    else if (this.sole !== undefined) demands.push(this.sole.demand);
    // The folded gateways take part as one client; they split its share.
    if (this.folded !== undefined) demands.push(this.folded.demand);
    const level = waterLevel(demands, capacity);
    let free = 0;
    for (const d of demands) if (d <= level) free += d;
    w.level = level;
    w.free = free;
    w.capacity = capacity;
    w.at = now;
    return w;
  }
}

/** A table's max-min water level over its gateways' demands, reused for LEVEL_TTL_MS. */
class WaterLevel {
  level = Number.POSITIVE_INFINITY;
  capacity = Number.NaN;
  /** Demand of the gateways at or under `level`, as of `at`. */
  free = 0;
  at = Number.NEGATIVE_INFINITY;
}

/** The gateways past a table's `maxClients`, as one aggregate client. */
class Folded {
  /** Their entry in the division; its `demand` and `held` are per member. */
  readonly share = new ClientShare();
  at = Number.NEGATIVE_INFINITY;
  /** Reports, offered units and held units per ms from the folded gateways, smoothed. */
  reports = 0;
  offered = 0;
  heldRate = 0;
  /** The last report interval of a folded gateway (their reports per interval = their number). */
  span = 100;
  /** Their demand and holds together, as counted in the table's sumDemand and sumHeld. */
  demand = 0;
  held = 0;

  /** How many gateways are folded: the rate of their reports times the interval. */
  count(): number {
    return Math.max(1, Math.round(this.reports * this.span));
  }

  /** Decays the smoothed rates to `now`. */
  decay(now: number, spanMs: number): void {
    const tau = Math.max(RATE_TAU_MS, 4 * spanMs);
    if (this.at !== Number.NEGATIVE_INFINITY && now > this.at) {
      const f = Math.exp(-(now - this.at) / tau);
      this.reports *= f;
      this.offered *= f;
      this.heldRate *= f;
    }
    this.at = Math.max(this.at, now);
  }
}

/**
 * How long a gateway not heard from still counts toward a key's demand: ten intervals, and at
 * least 5 s. A gateway that cannot reach the owner (during a drain, a view refresh that times
 * out) decides on its fallback share meanwhile, so its share stays reserved for it that long; with
 * a 1 s floor the new owner of a hot key dropped such gateways after 2.5 s and gave their share to
 * the others as well (chaos hotkey: up to 1.41x; 1.18x at most in five runs with 5 s). The price:
 * a gateway that really left keeps its share reserved up to 5 s. The simulation's scenarios are
 * unchanged but G (cost-weighted), 1.0032 -> 0.9998.
 */
export function clientStaleMs(intervalMs: number): number {
  return Math.max(5000, intervalMs * 10);
}
