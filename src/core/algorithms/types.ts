import type { Counter } from "../counter.js";
import type { Limit } from "../limit.js";

/**
 * A rate algorithm as plain functions over a `Counter`. `advance` brings the state to `now`
 * (rolls windows, refills tokens); the other functions assume it was called with the same `now`.
 */
export interface RateAlgorithm {
  init(c: Counter, l: Limit, now: number): void;
  advance(c: Counter, l: Limit, now: number): void;
  /** Units that may be admitted now. Negative while in debt. */
  available(c: Counter, l: Limit, now: number): number;
  /**
   * Adds usage; a negative amount refunds. Usage may exceed what is available (debt). Keeps
   * `expiresAt` current, so a counter is never swept while it still holds usage.
   */
  consume(c: Counter, l: Limit, amount: number, now: number): void;
  /** Earliest time at which `amount` units are available; Infinity if never (more than the limit). */
  availableAt(c: Counter, l: Limit, amount: number, now: number): number;
  /** When the counter is back to its fresh state if nothing more is consumed. */
  resetAt(c: Counter, l: Limit, now: number): number;
  /** Units per ms that become available by themselves (batched-mode supply). */
  refillPerMs(c: Counter, l: Limit, now: number): number;
  /**
   * Over how long a positive balance should be handed out, or a debt paid back, in batched mode,
   * when gateways report every `intervalMs`.
   */
  spendHorizonMs(c: Counter, l: Limit, now: number, intervalMs: number): number;
}

/** Window starts aligned to the epoch, as envoyproxy/ratelimit aligns them to the unit. */
export function windowStart(now: number, windowMs: number): number {
  return now - (now % windowMs);
}

/**
 * A window start back on the epoch. A counter handed over comes with its start shifted by the
 * time in transit (less any clock skew): the shift is taken as up to 3/4 of a window late and 1/4
 * early.
 */
export function realignedStart(t: number, windowMs: number): number {
  return t % windowMs === 0 ? t : windowStart(t + windowMs / 4, windowMs);
}

/** Rounds a computed time up to whole ms, ignoring float noise (0.30000000000000004 of a window). */
export function ceilMs(x: number): number {
  return Math.ceil(x - 1e-7);
}
