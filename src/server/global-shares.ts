import type { LimitRule } from "../config/types.js";

/**
 * Port: this region's shares of its `global: true` limits. The owner of a global key in a region
 * divides the region's share among its own gateways instead of the configured limit, and passes
 * on what they reported. `cluster/global-tier.ts` implements it as a gateway of the global tier
 * (another shardlimit cluster); a server without `--global-tier` has none, and decides a global
 * limit as an ordinary one.
 */
export interface GlobalShares {
  /** The rule to divide for counter `key` of global `rule` now: `rule` with the region's share as its limit. */
  ruleFor(key: string, rule: LimitRule, now: number): LimitRule;
  /** What this region's gateways reported for `key` (units admitted net of refunds, and rejected). */
  reported(key: string, rule: LimitRule, admitted: number, rejected: number): void;
}
