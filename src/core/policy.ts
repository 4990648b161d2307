import type { RateAlgorithm } from "./algorithms/types.js";
import type { ClientShare, ClientTable } from "./clients.js";
import type { Counter } from "./counter.js";
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

/** What the owner tells one gateway to do with one key until its next report is answered. */
export interface Policy {
  kind: PolicyKind;
  units: number;
  fraction: number;
  until: number;
  /** Cluster-wide units left now, and when the counter is full again. */
  remaining: number;
  resetAt: number;
}

/** A policy outlives the report interval so one late report does not leave a gateway without one. */
export const POLICY_LIFETIME_INTERVALS = 3;
/** ALLOW only while the balance would survive this many times today's total demand. */
const ALLOW_SAFETY = 1.5;
const PACING_SLACK = 1.5;

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
): Policy {
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
  // ALLOW also needs room for the biggest burst one report has brought lately: a gateway whose
  // traffic comes in bursts looks idle between them.
  if (
    avail > ALLOW_SAFETY * table.peakReport(now) &&
    avail + (refill - ALLOW_SAFETY * demand) * lifetime > 0
  ) {
    return allowPolicy(until, remaining, resetAt);
  }
  const capacity = refill + avail / alg.spendHorizonMs(c, l, now, intervalMs);
  if (capacity <= 0) {
    const at = alg.availableAt(c, l, 1, now);
    return {
      kind: PolicyKind.REJECT_UNTIL,
      units: 0,
      fraction: 1,
      until: Number.isFinite(at) && at > now ? at : until,
      remaining,
      resetAt,
    };
  }
  const share = table.fairShare(s, capacity, now);
  let units = share * intervalMs;
  // Without refill (fixed window) nothing beyond what the window still holds can be handed out.
  if (refill === 0) units = Math.min(units, Math.max(0, avail));
  if (s.demand > share * 1.001 && s.demand > 0) {
    return {
      kind: PolicyKind.REJECT_FRACTION,
      units,
      // Paced a little generously: demand is estimated high (a rise is taken at once), and the
      // units cap, not the fraction, is what bounds admission.
      fraction: Math.max(0, 1 - (PACING_SLACK * share) / s.demand),
      until,
      remaining,
      resetAt,
    };
  }
  return { kind: PolicyKind.GRANT, units, fraction: 0, until, remaining, resetAt };
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
