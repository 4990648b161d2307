import type { LimitRule } from "../config/types.js";
import { windowStart } from "../core/algorithms/types.js";

/**
 * What a gateway admits for a key while its owner is unreachable: its own share of the limit,
 * the limit divided by the gateways the owner last said report the key, so the cluster as a
 * whole stays near the limit without any coordination. `fail_mode: closed` admits nothing.
 */
export class Fallback {
  private tokens: number;
  private at: number;
  private readonly share: number;

  constructor(
    private readonly rule: LimitRule,
    gateways: number,
    /** Cluster-wide units the owner last said were left. */
    remaining: number,
    /**
     * Units this gateway admitted in the current window (fixed and sliding windows), counting
     * those in reports not yet answered.
     */
    admittedInWindow: number,
    /** Units this gateway admitted that `remaining` does not count yet (token bucket). */
    unconfirmed: number,
    now: number,
  ) {
    const n = Math.max(1, gateways);
    this.share = rule.limit / n;
    this.at = now;
    if (rule.algorithm === "token_bucket") {
      this.tokens = Math.max(0, Math.min(rule.burst / n, Math.max(0, remaining) / n) - unconfirmed);
    } else {
      this.tokens = Math.max(0, this.share - admittedInWindow);
    }
  }

  /** Concurrency: the most this gateway may hold at once. */
  get maxHeld(): number {
    return this.rule.failMode === "closed" ? 0 : this.share;
  }

  take(cost: number, now: number): boolean {
    if (this.rule.failMode === "closed") return false;
    const r = this.rule;
    if (r.algorithm === "token_bucket") {
      const cap = r.burst * (this.share / r.limit);
      this.tokens = Math.min(cap, this.tokens + ((now - this.at) * this.share) / r.windowMs);
    } else if (this.at < windowStart(now, r.windowMs)) {
      this.tokens = this.share; // a new window: a whole share again
    }
    this.at = now;
    if (this.tokens <= 0) return false;
    this.tokens -= cost;
    return true;
  }
}
