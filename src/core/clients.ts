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
  reports = 0;
}

/** Weight of a new measurement when demand falls; a rise is taken at once so a shift is met fast. */
const DEMAND_DECAY = 0.3;
/** Time constant of the key's total offered rate. */
const RATE_TAU_MS = 1000;
const FAST_TAU_MS = 250;
const PEAK_TAU_MS = 5000;
/** How long the cached water level may be reused by other clients' reports. */
const LEVEL_TTL_MS = 10;

/**
 * The gateways reporting one key, with running sums so each report costs O(1) on average. Most
 * keys are reported by one gateway: it is held inline, and a Map is made only for a second one.
 */
export class ClientTable {
  private soleId: string | undefined = undefined;
  private sole: ClientShare | undefined = undefined;
  private many: Map<string, ClientShare> | undefined = undefined;
  sumDemand = 0;
  sumHeld = 0;
  /** Units offered per ms by all clients together, smoothed over RATE_TAU_MS and FAST_TAU_MS. */
  private rate = 0;
  private fast = 0;
  private rateAt = Number.NEGATIVE_INFINITY;
  /** The largest single report's offered units lately (decays over PEAK_TAU_MS). */
  private peak = 0;
  private level = Number.POSITIVE_INFINITY;
  private levelCapacity = Number.NaN;
  private levelAt = Number.NEGATIVE_INFINITY;
  private prunedAt = 0;
  /** The staleness the table was last pruned with, so a sweep can prune it the same way. */
  staleMs = 0;

  get size(): number {
    return this.many !== undefined ? this.many.size : this.sole !== undefined ? 1 : 0;
  }

  upsert(clientId: string, now: number): ClientShare {
    let s: ClientShare | undefined;
    if (this.many !== undefined) {
      s = this.many.get(clientId);
      if (s === undefined) {
        s = new ClientShare();
        this.many.set(clientId, s);
        this.levelAt = Number.NEGATIVE_INFINITY;
      }
    } else if (this.sole === undefined) {
      s = this.sole = new ClientShare();
      this.soleId = clientId;
    } else if (this.soleId === clientId) {
      s = this.sole;
    } else {
      s = new ClientShare();
      this.many = new Map([
        [this.soleId!, this.sole],
        [clientId, s],
      ]);
      this.sole = undefined;
      this.soleId = undefined;
      this.levelAt = Number.NEGATIVE_INFINITY;
    }
    s.lastSeen = now;
    return s;
  }

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

  /**
   * Adds units offered (admitted + rejected) in one report to the key's total offered rate. The
   * per-client demands are rates over one interval, which a client sending rare bursts inflates
   * many times over; the total measured at the counter is not fooled by that.
   */
  offered(units: number, now: number): void {
    const dt = this.rateAt === Number.NEGATIVE_INFINITY ? 0 : now - this.rateAt;
    this.rate = this.rate * Math.exp(-dt / RATE_TAU_MS) + units / RATE_TAU_MS;
    this.fast = this.fast * Math.exp(-dt / FAST_TAU_MS) + units / FAST_TAU_MS;
    this.peak = Math.max(units, this.peak * Math.exp(-dt / PEAK_TAU_MS));
    this.rateAt = now;
  }

  /** The smoothed total offered rate at `now`, units per ms. */
  offeredRate(now: number): number {
    if (this.rateAt === Number.NEGATIVE_INFINITY) return 0;
    const dt = now - this.rateAt;
    // The slow average is steady for bursty senders; the fast one sees a surge within a few
    // reports. The larger of the two errs on the side of rationing.
    return Math.max(this.rate * Math.exp(-dt / RATE_TAU_MS), this.fast * Math.exp(-dt / FAST_TAU_MS));
  }

  /** The largest single report's offered units lately: how big a burst one gateway brings. */
  peakReport(now: number): number {
    if (this.rateAt === Number.NEGATIVE_INFINITY) return 0;
    return this.peak * Math.exp(-(now - this.rateAt) / PEAK_TAU_MS);
  }

  setHeld(s: ClientShare, held: number): void {
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
        this.sole = undefined;
        this.soleId = undefined;
      }
    } else {
      for (const [id, s] of this.many) {
        if (s.lastSeen < cutoff) {
          this.many.delete(id);
          this.sumDemand -= s.demand;
          this.sumHeld -= s.held;
          this.levelAt = Number.NEGATIVE_INFINITY;
        }
      }
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
    if (this.many === undefined) return capacity;
    if (now - this.levelAt > LEVEL_TTL_MS || Math.abs(capacity - this.levelCapacity) > capacity * 0.02) {
      const demands: number[] = [];
      for (const c of this.many.values()) demands.push(c.demand);
      this.level = waterLevel(demands, capacity);
      this.levelCapacity = capacity;
      this.levelAt = now;
    }
    return Math.min(s.demand, this.level);
  }
}
