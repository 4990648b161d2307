import { waterLevel } from "./fair-share.js";
import { PRIORITIES } from "./priority.js";

/**
 * A pool of backends (a region, a model deployment) and the limits attached to it (issue 14,
 * seed 004's regional level). Backends report their utilisation; the pool's owner keeps the latest
 * value per backend, averages the live ones weighted by capacity, and steps a PI controller on the
 * error against the pool's `target`, taken as a log ratio, e = ln(target / utilisation), so the
 * loop's gain does not depend on how far demand exceeds capacity. Its output `level` is one number
 * in [MIN_LEVEL, 1]:
 * - below 0 (*overloaded*): the pool admits e^level of its offered load, shedding the rest
 *   (1 − e^level), lowest class first, whatever the quotas say;
 * - above 0 (*idle*, entered only below `idleBelow`): level × target × capacity units per second are
 *   lent to requests over their quotas, divided max-min fairly among the subjects asking;
 * - 0 (*quota*): the quotas alone decide.
 * Near the target both sides move utilisation by about `level` × target per unit of level, so
 * one pair of gains serves both.
 * Pure and synchronous: time is passed in as `now` (ms).
 */

export type PoolMode = "quota" | "overloaded" | "idle";
export const POOL_MODES: readonly PoolMode[] = ["quota", "overloaded", "idle"];

/** A pool as the config defines it. */
export interface PoolSettings {
  readonly name: string;
  /** Utilisation the controller holds the pool at, in (0, 1]. */
  readonly target: number;
  /** Below this utilisation the pool turns idle and serves requests over their quotas. */
  readonly idleBelow: number;
}

export interface PoolGains {
  /** Proportional gain: level per unit of error (the log ratio ln(target / utilisation)). */
  readonly kp: number;
  /** Integral gain: level per unit of error per second. */
  readonly ki: number;
  /** The controller steps at most this often (ms); reports in between only update the backends. */
  readonly stepMs: number;
  /** A backend silent this long is left out of the average (ms). */
  readonly backendTtlMs: number;
  /**
   * The most the lending level rises per second: a loan reaches the gateways a policy lifetime
   * late and the load shows later still, so lending ramps up gently and is taken back at once.
   */
  readonly lendRisePerS: number;
}

export const DEFAULT_POOL_GAINS: PoolGains = {
  kp: 0.5,
  ki: 4,
  stepMs: 50,
  backendTtlMs: 1000,
  lendRisePerS: 0.5,
};

/** The lowest level: at most 1 − e^-7 (99.9%) of the offered load is shed. */
export const MIN_LEVEL = -7;
/** Utilisation below this counts as this in the log error (an empty pool is not infinitely idle). */
const MIN_UTILISATION = 0.01;
/** The log error is clamped to this range: one wild report cannot swing the level. */
const MAX_ERROR = 1;
const MIN_ERROR = -3;

/** Time constant of the per-class offered rates and the borrowers' demand (ms). */
const RATE_TAU_MS = 500;
/** A borrower's share may be this much above its measured demand. */
export const DEMAND_HEADROOM = 1.5;
/** A borrower unseen this long is forgotten. */
const BORROWER_TTL_MS = 2000;
/** Backends tracked per pool; past this, a new one is refused until silent ones expire. */
export const MAX_BACKENDS = 4096;
/** Borrowers tracked one by one; past this, new ones are not served from idle capacity. */
export const MAX_BORROWERS = 4096;
/** A borrower's unused share is kept for at most this long (ms): no burst after a quiet spell. */
const BORROW_BANK_MS = 100;
/** How long after its last loan a subject's quota debt is still forgiven (a loan's policy life and more). */
const LOAN_MEMORY_MS = 1000;
/** A step longer than this (a pool nobody touched) counts as this long. */
const MAX_STEP_MS = 1000;

/**
 * The PI controller: `level` = kp·e + integral, e = ln(target / utilisation), clamped to
 * [0, 1] while idle and [MIN_LEVEL, 0] otherwise. Anti-windup by conditional
 * integration: the integral does not move further while the output is saturated in the error's
 * direction, and is itself kept within the same bounds.
 */
export class PoolController {
  integral = 0;
  level = 0;
  /**
   * Idle capacity may be lent: entered below idleBelow (not while shedding), left once the load
   * without the loans is halfway from idleBelow to the target, or the level is back at 0.
   */
  idle = false;
  utilisation = 0;

  constructor(
    public settings: PoolSettings,
    readonly gains: PoolGains = DEFAULT_POOL_GAINS,
  ) {}

  get mode(): PoolMode {
    return this.level < 0 ? "overloaded" : this.level > 0 ? "idle" : "quota";
  }

  step(utilisation: number, dtMs: number): void {
    const { target, idleBelow } = this.settings;
    this.utilisation = utilisation;
    const ratio = Math.log(target / Math.max(MIN_UTILISATION, utilisation));
    const e = Math.min(MAX_ERROR, Math.max(MIN_ERROR, ratio));
    // Idle is entered below idleBelow and left once the load without the loans (utilisation less
    // what is lent, as a share of capacity) is back well above it, halfway to the target (a
    // noisy reading must not end it): then the quotas decide again at once.
    const base = utilisation - Math.max(0, this.level) * target;
    // Not while shedding: a low reading then is the shedding working, and the level climbs back
    // to 0 before anything is lent.
    if (utilisation < idleBelow && this.level >= 0) this.idle = true;
    else if (this.idle && base >= (idleBelow + target) / 2) this.idle = false;
    // While lending, the loans are taken back before anything is shed: the level stops at 0 and
    // idle ends there; shedding may start from the next step.
    const lo = this.idle ? 0 : MIN_LEVEL;
    const hi = this.idle ? 1 : 0;
    const p = this.gains.kp * e;
    const next = this.integral + (this.gains.ki * e * dtMs) / 1000;
    const saturatedUp = p + this.integral >= hi && e > 0;
    const saturatedDown = p + this.integral <= lo && e < 0;
    const integral = saturatedUp || saturatedDown ? this.integral : next;
    this.integral = Math.min(hi, Math.max(lo, integral));
    let level = Math.min(hi, Math.max(lo, p + this.integral));
    const rise = Math.max(0, this.level) + (this.gains.lendRisePerS * dtMs) / 1000;
    if (level > rise) {
      // Lending ramps: the integral follows the ramp rather than winding up beyond it.
      level = rise;
      this.integral = Math.max(lo, Math.min(this.integral, level - p));
    }
    this.level = level;
    if (this.idle && this.level <= 0 && utilisation >= idleBelow) this.idle = false;
  }

  /** No live backend: nothing is known, so the quotas alone decide. */
  reset(): void {
    this.integral = 0;
    this.level = 0;
    this.idle = false;
  }
}

/**
 * Per-class rejected fractions that shed `shed` of the total offered rate, filling the lowest
 * class first (`rates` and the result are by class rank, `low` first).
 */
export function classFractions(shed: number, rates: readonly number[]): number[] {
  let total = 0;
  for (const r of rates) total += r;
  let left = Math.max(0, Math.min(1, shed)) * total;
  return rates.map((r) => {
    if (left <= 0 || r <= 0) return 0;
    if (left >= r) {
      left -= r;
      return 1;
    }
    // This class takes the rest: nothing is left over for the ones above it.
    const f = left / r;
    left = 0;
    return f;
  });
}

/** An exponentially decaying sum: `rate()` is units per ms over the last ~tau. */
class DecayingRate {
  private sum = 0;
  private at = 0;
  constructor(private readonly tauMs: number) {}
  add(units: number, now: number): void {
    this.decay(now);
    this.sum += units;
  }
  rate(now: number): number {
    this.decay(now);
    return this.sum / this.tauMs;
  }
  /** Starts from `rate` units per ms as of `now` (a handed-over rate). */
  set(rate: number, now: number): void {
    this.sum = rate * this.tauMs;
    this.at = now;
  }
  private decay(now: number): void {
    if (now > this.at) {
      this.sum *= Math.exp(-(now - this.at) / this.tauMs);
      this.at = now;
    }
  }
}

interface Backend {
  utilisation: number;
  capacity: number;
  at: number;
}

interface Borrower {
  demand: DecayingRate;
  /** Units per ms of the idle capacity this borrower may take (set at each step). */
  share: number;
  credit: number;
  at: number;
  seen: number;
  /** When it was last given a share (ms), and that share. */
  lentAt: number;
  lent: number;
}

/** The most credit a borrower banks: BORROW_BANK_MS of its share, and at least one unit. */
function bank(b: Borrower): number {
  return b.share > 0 ? Math.max(1, b.share * BORROW_BANK_MS) : 0;
}

/** What metrics and `shardlimit status` show of a pool. */
export interface PoolSnapshot {
  name: string;
  mode: PoolMode;
  target: number;
  idleBelow: number;
  utilisation: number;
  level: number;
  integral: number;
  /** Rejected fraction per class, `low` first. */
  fractions: number[];
  backends: number;
  /** Units per second the live backends can serve. */
  capacity: number;
  /** Units per second lent to requests over their quotas (idle). */
  lending: number;
  borrowers: number;
}

/**
 * A pool's state as a handoff carries it to the new owner of the pool's key: each live backend's
 * latest report (its age rather than a time, clocks differ), the controller's state, the per-class
 * fractions and offered rates, so the new owner keeps shedding at the same fractions.
 */
export interface PoolTransfer {
  name: string;
  backends: { id: string; utilisation: number; capacity: number; ageMs: number }[];
  level: number;
  integral: number;
  idle: boolean;
  utilisation: number;
  /** Rejected fraction per class, `low` first. */
  fractions: number[];
  /** Offered units per ms per class, `low` first. */
  offered: number[];
}

/** Longest backend id a transfer may carry (as ReportPool accepts). */
export const MAX_BACKEND_ID = 256;

/**
 * What is wrong with a received pool transfer, or undefined: every number finite and in its
 * range (utilisation and fractions in [0, 1], levels within the controller's bounds, capacities
 * above 0, ages and rates not negative), one fraction and rate per class, backends bounded and
 * named. A bad transfer is dropped whole: the new owner relearns the pool from the next reports.
 */
export function poolTransferProblem(t: PoolTransfer): string | undefined {
  const fin = (x: unknown) => typeof x === "number" && Number.isFinite(x);
  const unit = (x: unknown) => fin(x) && (x as number) >= 0 && (x as number) <= 1;
  if (typeof t.name !== "string" || t.name === "") return "pool name is empty";
  if (!(fin(t.level) && t.level >= MIN_LEVEL && t.level <= 1))
    return `level ${t.level} is not within [${MIN_LEVEL}, 1]`;
  if (!(fin(t.integral) && t.integral >= MIN_LEVEL && t.integral <= 1))
    return `integral ${t.integral} is not within [${MIN_LEVEL}, 1]`;
  if (!unit(t.utilisation)) return `utilisation ${t.utilisation} is not within [0, 1]`;
  if (t.fractions.length !== PRIORITIES.length || !t.fractions.every(unit))
    return `fractions must be ${PRIORITIES.length} numbers within [0, 1]`;
  if (t.offered.length !== PRIORITIES.length || !t.offered.every((r) => fin(r) && r >= 0))
    return `offered must be ${PRIORITIES.length} finite rates >= 0`;
  if (t.backends.length > MAX_BACKENDS) return `${t.backends.length} backends, over ${MAX_BACKENDS}`;
  for (const b of t.backends) {
    if (typeof b.id !== "string" || b.id === "" || b.id.length > MAX_BACKEND_ID)
      return `a backend id must be 1-${MAX_BACKEND_ID} characters`;
    if (!unit(b.utilisation)) return `backend ${b.id}: utilisation ${b.utilisation} is not within [0, 1]`;
    if (!(fin(b.capacity) && b.capacity > 0 && b.capacity <= 1e12))
      return `backend ${b.id}: capacity ${b.capacity} is not within (0, 1e12]`;
    if (!(fin(b.ageMs) && b.ageMs >= 0)) return `backend ${b.id}: age ${b.ageMs} is not a duration >= 0`;
  }
  return undefined;
}

export class Pool {
  readonly controller: PoolController;
  private readonly backends = new Map<string, Backend>();
  private readonly offered = PRIORITIES.map(() => new DecayingRate(RATE_TAU_MS));
  /** Per class: fraction of a unit owed to shedding (deterministic thinning, no randomness). */
  private readonly owed = PRIORITIES.map(() => 0);
  private readonly borrowers = new Map<string, Borrower>();
  fractions: number[] = PRIORITIES.map(() => 0);
  private lastStep = Number.NaN;
  private capacity = 0;
  private live = 0;

  constructor(settings: PoolSettings, gains: PoolGains = DEFAULT_POOL_GAINS) {
    this.controller = new PoolController(settings, gains);
  }

  get name(): string {
    return this.controller.settings.name;
  }

  /** A config reload may move the target; the controller's state is kept. */
  configure(settings: PoolSettings): void {
    this.controller.settings = settings;
  }

  /**
   * A backend's utilisation ([0, 1]) and capacity (units per second, > 0; the caller validated
   * both). False, and nothing kept, when MAX_BACKENDS live backends are tracked already.
   */
  report(backend: string, utilisation: number, capacity: number, now: number): boolean {
    if (!this.backends.has(backend) && this.backends.size >= MAX_BACKENDS) {
      this.forgetSilent(now);
      if (this.backends.size >= MAX_BACKENDS) return false;
    }
    this.backends.set(backend, { utilisation, capacity, at: now });
    this.maybeStep(now);
    return true;
  }

  private forgetSilent(now: number): void {
    for (const [id, b] of this.backends) {
      if (now - b.at > this.controller.gains.backendTtlMs) this.backends.delete(id);
    }
  }

  /** Steps the controller if a step is due. Every entry point calls it. */
  maybeStep(now: number): void {
    if (Number.isNaN(this.lastStep)) this.lastStep = now;
    const dt = now - this.lastStep;
    if (dt < this.controller.gains.stepMs) return;
    this.lastStep = now;
    this.stepAt(now, Math.min(dt, MAX_STEP_MS));
  }

  private stepAt(now: number, dt: number): void {
    let weighted = 0;
    let capacity = 0;
    let live = 0;
    this.forgetSilent(now);
    for (const b of this.backends.values()) {
      weighted += b.utilisation * b.capacity;
      capacity += b.capacity;
      live++;
    }
    this.capacity = capacity;
    this.live = live;
    if (live === 0) this.controller.reset();
    else this.controller.step(weighted / capacity, dt);
    const level = this.controller.level;
    this.fractions = classFractions(
      level < 0 ? 1 - Math.exp(level) : 0,
      this.offered.map((r) => r.rate(now)),
    );
    this.divideIdle(now, this.lendingPerMs());
  }

  /**
   * The idle capacity (units per ms) divided max-min fairly among the borrowers' demand, with
   * DEMAND_HEADROOM: a share cut to the measured demand would fall behind every rise of it (the
   * loans only serve requests that come, and the controller holds the total).
   */
  private divideIdle(now: number, budget: number): void {
    const demands: number[] = [];
    for (const [id, b] of this.borrowers) {
      if (now - b.seen > BORROWER_TTL_MS) {
        this.borrowers.delete(id);
        continue;
      }
      demands.push(b.demand.rate(now) * DEMAND_HEADROOM);
    }
    const level = budget > 0 ? waterLevel(demands.slice(), budget) : 0;
    for (const b of this.borrowers.values()) {
      this.accrue(b, now);
      b.share = budget > 0 ? Math.min(b.demand.rate(now) * DEMAND_HEADROOM, level) : 0;
      if (b.share === 0) b.credit = 0;
    }
  }

  /** The share's credit since the last look, banked up to BORROW_BANK_MS of it (a debt is repaid). */
  private accrue(b: Borrower, now: number): void {
    b.credit = Math.min(b.credit + b.share * (now - b.at), Math.max(b.credit, bank(b)));
    b.at = now;
  }

  /** Counts `units` offered by a request of class `rank` on a limit attached to the pool. */
  offer(rank: number, units: number, now: number): void {
    this.offered[rank]!.add(units, now);
    this.maybeStep(now);
  }

  /** Whether a request of class `rank` and `cost` is shed (the pool is over its target). */
  shed(rank: number, cost: number, now: number): boolean {
    this.offer(rank, cost, now);
    const f = this.fractions[rank]!;
    if (f <= 0) {
      this.owed[rank] = 0;
      return false;
    }
    const owed = this.owed[rank]! + f * cost;
    if (owed >= cost) {
      this.owed[rank] = owed - cost;
      return true;
    }
    this.owed[rank] = owed;
    return false;
  }

  /**
   * Whether a request its quota refused may be served from idle capacity: counted as `subject`'s
   * demand either way; admitted when the subject's share has banked `cost`.
   */
  borrow(subject: string, cost: number, now: number): boolean {
    this.maybeStep(now);
    const b = this.borrower(subject, cost, now);
    if (b === undefined || this.controller.level <= 0) return false;
    this.accrue(b, now);
    // A request dearer than what a share may bank goes once the bank is full, leaving a debt.
    if (b.credit < Math.min(cost, bank(b)) || b.credit <= 0) return false;
    b.credit -= cost;
    return true;
  }

  /**
   * A subject's share of the idle capacity and its demand, units per ms (share 0 unless idle),
   * and the share it was last lent if that was within LOAN_MEMORY_MS (what it admitted on a loan
   * a gateway still held is not owed on its quota), else 0.
   */
  shareOf(subject: string, now: number): { share: number; demand: number; lent: number } {
    this.maybeStep(now);
    const b = this.borrowers.get(subject);
    if (b === undefined) return { share: 0, demand: 0, lent: 0 };
    const share = this.controller.level > 0 ? b.share : 0;
    if (share > 0) {
      b.lentAt = now;
      b.lent = share;
    }
    const lent = now - b.lentAt <= LOAN_MEMORY_MS ? b.lent : 0;
    return { share, demand: b.demand.rate(now), lent };
  }

  /** Records a batched gateway's demand over its quota for `subject` (units), as `borrow` would. */
  demand(subject: string, units: number, now: number): void {
    this.borrower(subject, units, now);
  }

  /** The subject's borrower entry with `units` of demand counted; undefined when the table is full. */
  private borrower(subject: string, units: number, now: number): Borrower | undefined {
    let b = this.borrowers.get(subject);
    if (b === undefined) {
      if (this.borrowers.size >= MAX_BORROWERS) return undefined;
      b = {
        demand: new DecayingRate(RATE_TAU_MS),
        share: 0,
        credit: 0,
        at: now,
        seen: now,
        lentAt: Number.NEGATIVE_INFINITY,
        lent: 0,
      };
      this.borrowers.set(subject, b);
    }
    b.demand.add(units, now);
    b.seen = now;
    return b;
  }

  /** Units per ms lent to requests over their quotas: level × target × capacity while idle. */
  private lendingPerMs(): number {
    const level = this.controller.level;
    return level > 0 ? (level * this.controller.settings.target * this.capacity) / 1000 : 0;
  }

  /**
   * The state a handoff carries (live backends only), and this pool forgets it: its key moved,
   * the new owner decides with it from now on.
   */
  take(now: number): PoolTransfer {
    this.forgetSilent(now);
    const c = this.controller;
    const out: PoolTransfer = {
      name: this.name,
      backends: [...this.backends].map(([id, b]) => ({
        id,
        utilisation: b.utilisation,
        capacity: b.capacity,
        ageMs: Math.max(0, now - b.at),
      })),
      level: c.level,
      integral: c.integral,
      idle: c.idle,
      utilisation: c.utilisation,
      fractions: [...this.fractions],
      offered: this.offered.map((r) => r.rate(now)),
    };
    this.backends.clear();
    this.live = 0;
    this.capacity = 0;
    c.reset();
    c.utilisation = 0;
    this.fractions = PRIORITIES.map(() => 0);
    return out;
  }

  /**
   * A handed-over state (checked with poolTransferProblem) in place of this pool's: the backends'
   * latest reports, aged as they were, the controller's level, integral and mode, the fractions
   * and offered rates. Backends that reported here meanwhile keep their newer report. The next
   * step is a whole step interval away, so the fractions hold until then.
   */
  put(t: PoolTransfer, now: number): void {
    for (const b of t.backends) {
      const at = now - b.ageMs;
      const mine = this.backends.get(b.id);
      if (mine !== undefined && mine.at >= at) continue;
      if (mine === undefined && this.backends.size >= MAX_BACKENDS) break;
      this.backends.set(b.id, { utilisation: b.utilisation, capacity: b.capacity, at });
    }
    const c = this.controller;
    c.level = t.level;
    c.integral = t.integral;
    c.idle = t.idle;
    c.utilisation = t.utilisation;
    this.fractions = [...t.fractions];
    for (let i = 0; i < this.offered.length; i++) this.offered[i]!.set(t.offered[i]!, now);
    let capacity = 0;
    let live = 0;
    for (const b of this.backends.values()) {
      if (now - b.at <= c.gains.backendTtlMs) {
        capacity += b.capacity;
        live++;
      }
    }
    this.capacity = capacity;
    this.live = live;
    this.lastStep = now;
  }

  snapshot(): PoolSnapshot {
    const c = this.controller;
    const lending = this.lendingPerMs() * 1000;
    return {
      name: this.name,
      mode: c.mode,
      target: c.settings.target,
      idleBelow: c.settings.idleBelow,
      utilisation: c.utilisation,
      level: c.level,
      integral: c.integral,
      fractions: [...this.fractions],
      backends: this.live,
      capacity: this.capacity,
      lending,
      borrowers: this.borrowers.size,
    };
  }
}
