import type { Policy } from "../core/policy.js";
import type { KeyPolicy } from "../protocol/messages.js";

const MAX_U32 = 0xffff_ffff;

export function ms(v: number): number {
  if (!(v > 0)) return 0;
  return v >= MAX_U32 ? MAX_U32 : Math.ceil(v);
}

/**
 * A policy for the wire. Zero fields are left out rather than set: protobufjs writes every field
 * present, and most policies are ALLOW or GRANT with half their fields zero.
 */
export function keyPolicy(p: Policy, limit: number, gateways: number, now: number): KeyPolicy {
  const out: KeyPolicy = { kind: p.kind, validMs: ms(p.until - now), limit };
  if (gateways > 1) out.gateways = gateways;
  if (p.units !== 0) out.units = p.units;
  if (p.fraction !== 0) out.fraction = p.fraction;
  if (p.remaining > 0 && Number.isFinite(p.remaining)) out.remaining = p.remaining;
  const reset = ms(p.resetAt - now);
  if (reset > 0) out.resetMs = reset;
  if (p.share !== undefined) out.sharePerS = p.share * 1000;
  return out;
}
