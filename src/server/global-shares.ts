import type { LimitRule } from "../config/types.js";
import type { CheckItem, Decision } from "../core/decision.js";

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

/**
 * Synchronous decisions (`Check`, `ShouldRateLimit`) in a region: each engine item of a global
 * rule charges the region's share instead of the configured limit. Returns the configured rules
 * of the items it swapped, by index, to pass the decisions on; undefined when there are none.
 * Items come from `addCharges`, whose limits are the config's rules.
 */
export function chargeShares(
  global: GlobalShares | undefined,
  items: CheckItem[],
  now: number,
): (LimitRule | undefined)[] | undefined {
  if (global === undefined) return undefined;
  let swapped: (LimitRule | undefined)[] | undefined;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    if (it.limit.global !== true) continue;
    const rule = it.limit as LimitRule;
    swapped ??= new Array(items.length);
    swapped[i] = rule;
    it.limit = global.ruleFor(it.key, rule, now);
  }
  return swapped;
}

/** Passes the swapped items' decisions on: admitted units, or refused ones (none decided: refused). */
export function reportCharged(
  global: GlobalShares | undefined,
  items: readonly CheckItem[],
  swapped: readonly (LimitRule | undefined)[] | undefined,
  decisions: readonly Decision[],
): void {
  if (global === undefined || swapped === undefined) return;
  for (let i = 0; i < items.length; i++) {
    const rule = swapped[i];
    if (rule === undefined) continue;
    const it = items[i]!;
    const ok = decisions[i]?.allowed === true;
    global.reported(it.key, rule, ok ? it.cost : 0, ok ? 0 : it.cost);
  }
}
