import type { LimitRule } from "../../src/config/types.js";
import type { GlobalShares } from "../../src/server/global-shares.js";

/** A region's fixed share of every global limit, and the counts passed on to it (a fake global tier). */
export class FixedShare implements GlobalShares {
  readonly seen: [string, number, number][] = [];
  constructor(private readonly perS: number) {}
  ruleFor(_key: string, rule: LimitRule): LimitRule {
    return { ...rule, limit: (this.perS * rule.windowMs) / 1000, burst: this.perS, global: false };
  }
  reported(key: string, _rule: LimitRule, admitted: number, rejected: number): void {
    this.seen.push([key, admitted, rejected]);
  }
}
