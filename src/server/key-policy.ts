import type { Policy } from "../core/policy.js";
import {
  P_FRACTION,
  P_GATEWAYS,
  P_KIND,
  P_LIMIT,
  P_PRESENT,
  P_REMAINING,
  P_RESET_MS,
  P_SHARE_PER_S,
  P_UNITS,
  P_VALID_MS,
  POLICY_NUMBERS,
  type PolicyRows,
} from "../protocol/report-codec.js";

const MAX_U32 = 0xffff_ffff;

export function ms(v: number): number {
  if (!(v > 0)) return 0;
  return v >= MAX_U32 ? MAX_U32 : Math.ceil(v);
}

/**
 * A policy for the wire, written into row `i` of `rows` (fresh: every number 0), no object made.
 * Zero fields are left out rather than set (most policies are ALLOW or GRANT with half their
 * fields zero): `rows.policy(i)` has only the fields set here.
 */
export function keyPolicyRow(
  rows: PolicyRows,
  i: number,
  p: Policy,
  limit: number,
  gateways: number,
  now: number,
): void {
  const v = rows.numbers;
  const o = i * POLICY_NUMBERS;
  let present = (1 << P_KIND) | (1 << P_VALID_MS) | (1 << P_LIMIT);
  v[o + P_KIND] = p.kind;
  v[o + P_VALID_MS] = ms(p.until - now);
  v[o + P_LIMIT] = limit;
  if (gateways > 1) {
    v[o + P_GATEWAYS] = gateways;
    present |= 1 << P_GATEWAYS;
  }
  if (p.units !== 0) {
    v[o + P_UNITS] = p.units;
    present |= 1 << P_UNITS;
  }
  if (p.fraction !== 0) {
    v[o + P_FRACTION] = p.fraction;
    present |= 1 << P_FRACTION;
  }
  if (p.remaining > 0 && Number.isFinite(p.remaining)) {
    v[o + P_REMAINING] = p.remaining;
    present |= 1 << P_REMAINING;
  }
  const reset = ms(p.resetAt - now);
  if (reset > 0) {
    v[o + P_RESET_MS] = reset;
    present |= 1 << P_RESET_MS;
  }
  if (p.share !== undefined) {
    v[o + P_SHARE_PER_S] = p.share * 1000;
    present |= 1 << P_SHARE_PER_S;
  }
  v[o + P_PRESENT] = present;
}
