import type { RateAlgorithm } from "./algorithms/types.js";
import type { ClientShare, ClientTable } from "./clients.js";
import type { Counter } from "./counter.js";
import { headroom } from "./fair-share.js";
import type { Limit } from "./limit.js";

/** Wire values of the policy kinds (0 is "unspecified" on the wire). */
export const PolicyKind = {
  /** Admit everything until `until`. */
  ALLOW: 1,
  /** Reject everything until `until`. */
  REJECT_UNTIL: 2,
  /** Reject this `fraction` of requests, admitting at most `units` until `until`. */
  REJECT_FRACTION: 3,
  /** Admit at most `units` until `until`. */
  GRANT: 4,
} as const;
export type PolicyKind = (typeof PolicyKind)[keyof typeof PolicyKind];

/** A policy kind's wire name (`ALLOW`, `GRANT`...), for people (`inspect`). */
export function policyKindName(kind: number): string {
  for (const [name, k] of Object.entries(PolicyKind)) if (k === kind) return name;
  return `kind ${kind}`;
}

/** What the owner tells one gateway to do with one key until its next report is answered. */
export interface Policy {
  kind: PolicyKind;
  units: number;
  fraction: number;
  until: number;
  /** Cluster-wide units left now, and when the counter is full again. */
  remaining: number;
  resetAt: number;
  /**
   * A `global` limit's only: this gateway's max-min fair part of the limit's own rate (units per
   * ms), before the counter's balance or debt. A region's owner takes it as the region's share.
   */
  share?: number;
}

/** A policy outlives the report interval so one late report does not leave a gateway without one. */
export const POLICY_LIFETIME_INTERVALS = 3;
/** ALLOW only while the balance would survive this many times today's total demand. */
const ALLOW_SAFETY = 1.5;
const PACING_SLACK = 1.5;
/** How long a grant to a sender within its share lasts (it is small, and renewed on use). */
const LIGHT_LIFETIME_INTERVALS = 50;

export function allowPolicy(until: number, remaining: number, resetAt: number): Policy {
  return { kind: PolicyKind.ALLOW, units: 0, fraction: 0, until, remaining, resetAt };
}

/**
 * The batched-mode policy for one gateway and one rate-limited key. The counter is exact (every
 * reported unit is consumed, and the balance may go negative); the policy only decides how the
 * supply of the next interval is divided:
 * - plenty of balance for twice the current total demand: ALLOW, no per-request cap;
 * - otherwise the supply rate (refill, plus the balance spread over the algorithm's horizon, or
 *   minus a debt paid back over it) is divided max-min fairly by demand, and each gateway gets its
 *   share of one interval as a GRANT, or as REJECT_FRACTION when its demand exceeds the share;
 * - no supply at all: REJECT_UNTIL the counter has room again.
 * The balance acts as the integrator of this loop: over-admission becomes debt that shrinks the
 * next grants, under-use becomes balance that grows them, so the admitted rate converges on the
 * limit whatever the number or skew of gateways.
 */
export function ratePolicy(
  alg: RateAlgorithm,
  c: Counter,
  l: Limit,
  s: ClientShare,
  table: ClientTable,
  intervalMs: number,
  now: number,
  /** How the supply is divided; max-min over `table` by default. */
  divideBy?: Division,
): Policy {
  // The default division is one object reused call after call (nothing keeps it past the call):
  // a new one per report entry was a third of the allocation of batched ingest.
  const division: Division = divideBy ?? GATEWAYS.of(table, s, now);
  // A global limit's gateways are regions, each deciding on its own counter: what it divides is
  // its fair part of the steady rate, not a grant shaped by this counter's balance (which would
  // swing with the round trips between regions; each region's own counter keeps it exact).
  if (l.global === true) {
    const p = ratePolicy(alg, c, { ...l, global: false }, s, table, intervalMs, now, division);
    const refill = alg.refillPerMs(c, l, now);
    p.share = division.share(refill > 0 ? refill : l.limit / l.windowMs);
    return p;
  }
  const avail = alg.available(c, l, now);
  const remaining = Math.max(0, Math.floor(avail));
  const resetAt = alg.resetAt(c, l, now);
  const lifetime = intervalMs * POLICY_LIFETIME_INTERVALS;
  const until = now + lifetime;
  if (l.shadowMode) return allowPolicy(until, remaining, resetAt);

  const refill = alg.refillPerMs(c, l, now);
  // Demand as the smaller of the clients' own rates and the total measured at the counter: bursty
  // clients that report rarely each look like a steady sender, the total does not.
  // A window without refill cannot pay an overshoot back, so it trusts only the larger figure.
  const demand = refill === 0 ? table.sumDemand : Math.min(table.sumDemand, table.offeredRate(now));
  // Who is within their share is judged on the limit's own rate: the heavy senders' budget keeps
  // room for the others' expected demand, so a window spent early or a debt is their doing and
  // they wait for it first.
  const steady = refill > 0 ? refill : l.limit / l.windowMs;
  // Divided by class (`reserve`, or classes above asking): a sender over its share is never let
  // loose on the balance, which is kept for those ahead; what a reserve keeps is never anyone's
  // below it. Only then is the share needed before the ALLOW test: a plain key's ALLOW (most
  // reports) does without the division.
  const classed = division.reserved !== undefined;
  let steadyShare = 0;
  let within = false;
  if (classed) {
    steadyShare = division.share(steady);
    within = division.within(steady, steadyShare);
  }
  const reserved = division.reserved?.() ?? 0;
  const base = refill === 0 ? l.limit : l.burst;
  const cap = division.cap?.();
  const spendable = Math.min(avail - base * reserved, cap?.avail ?? Number.POSITIVE_INFINITY);
  // ALLOW also needs room for the biggest burst one report has brought lately: a gateway whose
  // traffic comes in bursts looks idle between them.
  if (
    (!classed || within) &&
    spendable > ALLOW_SAFETY * table.peakReport(now) &&
    spendable + (refill * (1 - reserved) - ALLOW_SAFETY * demand) * lifetime > 0
  ) {
    return allowPolicy(until, remaining, resetAt);
  }
  if (!classed) {
    steadyShare = division.share(steady);
    within = division.within(steady, steadyShare);
  }
  const horizon = alg.spendHorizonMs(c, l, now, intervalMs);
  const capacity = refill * (1 - reserved) + spendable / horizon;
  if (within) {
    // In debt (or the window spent) nobody is granted anything, light or not: a sender that reads
    // light between sparse costly requests would otherwise keep the debt from ever being paid.
    if (capacity <= 0) return rejectUntil(alg, c, l, now, until, remaining, resetAt);
    let units = division.share(capacity) * intervalMs;
    // A light sender's share of one interval is a fraction of a request: its arrivals are bursty
    // (two in one interval are common at a quarter of one expected), and a grant of its mean would
    // reject every second one. Its bursts are granted too (three deviations, or the most it
    // brought in one report lately, and two units more: at a quarter of a request per interval
    // that admits 99.95% of Poisson arrivals): they average out to its demand, and the heavy
    // senders' budget keeps room for them.
    units = Math.max(units + 3 * Math.sqrt(units), s.peak) + 2;
    // Without refill (fixed window) nothing beyond what the window still holds can be handed out.
    if (refill === 0) units = Math.min(units, avail);
    // A sparse sender goes quiet for longer than a policy's usual life (a key with nothing to
    // report is not reported), and its next request would find no policy and its allowance spent.
    // Its small grant keeps it admitted: it lasts for LIGHT_LIFETIME_INTERVALS.
    const lasts = Math.min(now + LIGHT_LIFETIME_INTERVALS * intervalMs, refill === 0 ? resetAt : Infinity);
    return { kind: PolicyKind.GRANT, units, fraction: 0, until: Math.max(until, lasts), remaining, resetAt };
  }
  // Over its share: what is left once the gateways within theirs have what they are expected to
  // ask for, over what remains of a window (its units do not come back) or the bucket's horizon.
  const ahead = division.free(steady);
  const span = refill === 0 ? Math.max(0, resetAt - now) : horizon;
  // What classes above may keep (`reserve`) is never this gateway's, used or not: their expected
  // demand or the reserve, whichever is more, in units (`kept`) and in refill.
  const kept = Math.max(headroom(ahead * span), base * reserved);
  const flow = Math.min(steady - ahead, steady * (1 - reserved));
  // A bucket's refill goes to the light senders first; a window's units for them are `kept`.
  // Under a reserve, also what the class may still spend of its capped rate.
  const budget = Math.min(
    (refill === 0 ? 0 : flow) + (avail - kept) / horizon,
    cap === undefined ? Number.POSITIVE_INFINITY : cap.refill + cap.avail / horizon,
  );
  if (budget <= 0) return rejectUntil(alg, c, l, now, until, remaining, resetAt, kept);
  // Its part of the heavy senders' budget is its part of their steady supply.
  const share = (steadyShare * budget) / Math.max(flow, Number.MIN_VALUE);
  let units = share * (division.grantMs ?? intervalMs);
  if (refill === 0) units = Math.min(units, Math.max(0, avail - kept));
  // A gateway admits while its grant is above zero, so a grant of 1.25 requests admits two: small
  // grants would be overrun by up to a request each interval, and a tenant paced at a small share
  // would get more than its weight says. Whole units, the fractions carried to the next grant,
  // keep each gateway at its share on average.
  units = wholeUnits(s, units);
  return {
    kind: PolicyKind.REJECT_FRACTION,
    units,
    // Paced a little generously: demand is estimated high (a rise is taken at once), and the
    // units cap, not the fraction, is what bounds admission. A grant of a few requests is paced
    // more generously still (Poisson deviations, and one more): requests let through by the
    // fraction come in bursts, and too few in an interval would leave the grant unused.
    fraction: Math.max(0, 1 - passes(PACING_SLACK * share * intervalMs) / (s.demand * intervalMs)),
    until,
    remaining,
    resetAt,
  };
}

/** How a counter's supply is divided among the gateways reporting it. */
export interface Division {
  /** This gateway's part of `capacity` (units per ms): max-min fair, plus a part of any surplus. */
  share(capacity: number): number;
  /** What the gateways within their share of `capacity` ask for together (units per ms). */
  free(capacity: number): number;
  /** Whether this gateway asks no more than `share`, its part of `capacity`. */
  within(capacity: number, share: number): boolean;
  /** The fraction of the limit kept for classes above this gateway's (`reserve`); 0 if none. */
  reserved?(): number;
  /**
   * What this gateway's class may still spend under that reserve, and the rate that comes back:
   * the reserve's cap on the class's rate, which the counter's own balance does not show.
   */
  cap?(): { avail: number; refill: number } | undefined;
  /**
   * How much time a paced grant covers (an interval by default). A gateway whose grant runs out
   * asks again early; granted a whole interval each time, it would get two intervals' worth in
   * one, and with classes the balance kept for those ahead would pay for it.
   */
  grantMs?: number;
}

/** Max-min among the gateways of one table. */
class GatewayDivision implements Division {
  private table!: ClientTable;
  private s!: ClientShare;
  private now = 0;

  of(table: ClientTable, s: ClientShare, now: number): this {
    this.table = table;
    this.s = s;
    this.now = now;
    return this;
  }

  share(capacity: number): number {
    return this.table.fairShare(this.s, capacity, this.now);
  }

  // Per-gateway estimates read sparse senders high (a rise is taken at once): scaled by what
  // the counter measures against what the gateways' estimates add up to.
  free(capacity: number): number {
    const t = this.table;
    return (
      t.freeDemand(capacity, this.now) *
      Math.min(1, t.offeredRate(this.now) / Math.max(t.sumDemand, Number.MIN_VALUE))
    );
  }

  within(_capacity: number, share: number): boolean {
    return this.s.demand <= share * 1.001;
  }
}

const GATEWAYS = new GatewayDivision();

/** How many requests the fraction should let through in an interval to use `units` of a grant. */
function passes(units: number): number {
  return units + 3 * Math.sqrt(units) + 1;
}

/** `units` rounded down, the remainder carried in `s` and added to its next grant. */
function wholeUnits(s: ClientShare, units: number): number {
  const total = units + s.carry;
  const whole = Math.floor(total);
  s.carry = Math.min(1, total - whole);
  return whole;
}

/** Nothing to hand out: reject until the counter has `beyond` units and one more. */
function rejectUntil(
  alg: RateAlgorithm,
  c: Counter,
  l: Limit,
  now: number,
  until: number,
  remaining: number,
  resetAt: number,
  beyond = 0,
): Policy {
  const at = alg.availableAt(c, l, beyond + 1, now);
  return {
    kind: PolicyKind.REJECT_UNTIL,
    units: 0,
    fraction: 1,
    until: Number.isFinite(at) && at > now ? at : until,
    remaining,
    resetAt,
  };
}

/**
 * Concurrency in batched mode: each gateway reports how many units it holds now; the owner sums
 * them (with leases from synchronous callers) and grants each gateway the most it may hold at once:
 * what it holds plus an equal part of the free slots among the gateways asking.
 */
export function concurrencyPolicy(
  held: number,
  l: Limit,
  s: ClientShare,
  table: ClientTable,
  intervalMs: number,
  now: number,
): Policy {
  const free = l.limit - held;
  const until = now + intervalMs * POLICY_LIFETIME_INTERVALS;
  const remaining = Math.max(0, Math.floor(free));
  if (l.shadowMode) return allowPolicy(until, remaining, now);
  const extra = free > 0 ? free / Math.max(1, table.size) : 0;
  return { kind: PolicyKind.GRANT, units: s.held + extra, fraction: 0, until, remaining, resetAt: now };
}

/** Strictness of a policy kind: the stricter of two policies wins when both apply. */
const STRICTNESS: Readonly<Record<PolicyKind, number>> = {
  [PolicyKind.ALLOW]: 0,
  [PolicyKind.GRANT]: 1,
  [PolicyKind.REJECT_FRACTION]: 2,
  [PolicyKind.REJECT_UNTIL]: 3,
};

/**
 * One policy that keeps a gateway within two limits at once (a tenant's own and its share of the
 * group's): the stricter kind, the smaller cap, the larger rejected fraction, the sooner expiry
 * (a rejection lasts until both have room).
 */
export function bothPolicies(a: Policy, b: Policy): Policy {
  const [strict, other] = STRICTNESS[a.kind] >= STRICTNESS[b.kind] ? [a, b] : [b, a];
  const capped = (p: Policy) => p.kind === PolicyKind.GRANT || p.kind === PolicyKind.REJECT_FRACTION;
  const tighter = a.remaining <= b.remaining ? a : b;
  return {
    kind: strict.kind,
    units: capped(other) && capped(strict) ? Math.min(a.units, b.units) : strict.units,
    fraction: Math.max(a.fraction, b.fraction),
    until:
      strict.kind === PolicyKind.REJECT_UNTIL && other.kind === PolicyKind.REJECT_UNTIL
        ? Math.max(a.until, b.until)
        : strict.kind === PolicyKind.REJECT_UNTIL
          ? strict.until
          : Math.min(a.until, b.until),
    remaining: tighter.remaining,
    resetAt: tighter.resetAt,
  };
}
