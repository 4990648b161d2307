import type { LimitRule } from "../config/types.js";
import { windowStart } from "../core/algorithms/types.js";

/**
 * What a gateway admits for a key while its owner is unreachable: its own share of the limit,
 * the limit divided by the gateways the owner last said report the key, so the cluster as a
 * whole stays near the limit without any coordination. `fail_mode: closed` admits nothing.
 *
 * In the window the owner last answered for, the share is also capped by this gateway's part of
 * what the owner said was left: gateways that had used less than their share must not admit the
 * difference again once the owner has said the window is full (a hot key's 300 gateways through
 * a drain: 1.26x). A window's share ends in randomized rounding: a fraction of a unit left admits
 * a request with that probability, so n gateways with shares of limit / n admit the limit on
 * average, not n x ceil(limit / n) (300 gateways, limit 1000: 1200).
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
    /** Units this gateway admitted that `remaining` does not count yet. */
    unconfirmed: number,
    now: number,
    /** When the window `remaining` was counted in ends (the owner's last `resetAt`). */
    resetAt: number,
  ) {
    const n = Math.max(1, gateways);
    this.share = rule.limit / n;
    this.at = now;
    if (rule.algorithm === "token_bucket") {
      this.tokens = Math.max(0, Math.min(rule.burst / n, Math.max(0, remaining) / n) - unconfirmed);
    } else {
      this.tokens = Math.max(0, this.share - admittedInWindow);
      // Still the window of the owner's last answer: no more than this gateway's part of its rest.
      if (now < resetAt) this.tokens = Math.min(this.tokens, Math.max(0, remaining / n - unconfirmed));
    }
  }

  /** This gateway's share of the limit per window (the limit / the gateways last reported). */
  get perWindow(): number {
    return this.share;
  }

  /** Units of the share left as of the last decision. */
  get left(): number {
    return Math.max(0, this.tokens);
  }

  /** Concurrency: the most this gateway may hold at once. */
  get maxHeld(): number {
    return this.rule.failMode === "closed" ? 0 : this.share;
  }

  /** `random` in [0, 1): the rounding of a share's last fraction of a unit (see the class). */
  take(cost: number, now: number, random: number): boolean {
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
    // A bucket pays an overdraw back from its refill; a window's share is whole again in the next
    // window, so there less left than the cost admits with probability tokens / cost (spent either way).
    const ok = this.tokens >= cost || r.algorithm === "token_bucket" || random * cost < this.tokens;
    this.tokens -= cost;
    return ok;
  }
}
