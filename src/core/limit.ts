import type { Algorithm } from "./algorithms/names.js";

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
