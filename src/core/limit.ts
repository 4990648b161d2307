import type { Algorithm } from "./algorithms/names.js";
import type { Reserve } from "./priority.js";

/**
 * What the core needs to know about a limit. `LimitRule` from the config satisfies it; tests pass
 * plain objects. Kept narrow so the core does not depend on how limits are configured.
 */
export interface Limit {
  readonly algorithm: Algorithm;
  /** Units per window; for `concurrency`, the most held at once. */
  readonly limit: number;
  readonly windowMs: number;
  /** Token bucket capacity. */
  readonly burst: number;
  readonly unlimited: boolean;
  readonly shadowMode: boolean;
  /** Concurrency: a slot not released within this long is freed. */
  readonly leaseTimeoutMs: number;
  /** Divided among subjects (tenants) by weighted max-min fair share when contended. */
  readonly fairShare?: FairShareSpec;
  /** Fractions of the limit kept for classes at or above each named one. */
  readonly reserve?: Reserve;
  /**
   * A child limit a subject may exceed while the fair-share limit above it has idle capacity
   * (borrowed, and taken back first when others need it).
   */
  readonly soft?: boolean;
  /** Held across regions: its policies carry each gateway's fair part of the rate (`Policy.share`). */
  readonly global?: boolean;
}

/** `fair_share:` of a limit: the child key whose values share it, and their weights (default 1). */
export interface FairShareSpec {
  readonly by: string;
  readonly weights: ReadonlyMap<string, number>;
}

export function limitDefaults(partial: Partial<Limit> & Pick<Limit, "algorithm" | "limit">): Limit {
  return {
    windowMs: 1000,
    burst: partial.limit,
    unlimited: false,
    shadowMode: false,
    leaseTimeoutMs: 30_000,
    ...partial,
  };
}
