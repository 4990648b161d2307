import { ShardlimitError } from "./errors.js";
import type { Limit } from "./limit.js";

/** What the engine's operations take and give: decisions, check items, report entries. */

/** The outcome of a synchronous decision on one key. */
export interface Decision {
  allowed: boolean;
  /** The limit is in shadow mode and would have rejected: let through, but count it as such. */
  shadowed: boolean;
  /** Units left after this decision (never negative). */
  remaining: number;
  /** When the counter is full again. */
  resetAt: number;
  /** Earliest time the same cost could be admitted; `now` when allowed, Infinity if never. */
  retryAt: number;
  /** A soft limit's item admitted on its fair-share parent's idle capacity, not its own. */
  borrowed?: boolean;
  /** Set on a rejection: what the engine saw when it said no (see `RejectReason`). */
  reason?: RejectReason;
}

/**
 * Why a request was rejected, in the engine's own figures (rates in units per second):
 * - `over_limit`: the counter had `available` units, fewer than `cost`;
 * - `fair_share`: the subject (a tenant of a `fair_share` limit) asks `demand`, more than its
 *   `share`, and is paced at its share;
 * - `priority`: units were there, but `kept` of them are held for the classes above (their
 *   `reserve` and their expected demand), or the class asks more than what the classes above
 *   leave it (`share`);
 * - `together`: this item fitted, but another item it is decided with (an atomic check, a
 *   tenant's group) did not;
 * - `not_owner`, `fallback`: the server that was asked does not own the key; a gateway that lost
 *   its owner decides on its own fallback share.
 */
export interface RejectReason {
  kind: RejectKind;
  cost: number;
  available?: number;
  demand?: number;
  share?: number;
  kept?: number;
  /** Paced at its share: ms until the pace has put the cost back (the earliest retry). */
  paceMs?: number;
  /** The subject's tenant ("" for none) and priority rank. */
  subject?: string;
  rank?: number;
}
export type RejectKind = "over_limit" | "fair_share" | "priority" | "together" | "not_owner" | "fallback";

export interface CheckItem {
  key: string;
  limit: Limit;
  cost: number;
  /** The shard key that places the counter; the key itself when absent. */
  shard?: string;
  /** Priority class rank (`PRIORITY_RANK`); `normal` when absent. */
  rank?: number;
  /** Under a fair-share limit: the tenant charged, and its weight (1 when absent). */
  subject?: string;
  weight?: number;
  /**
   * Items with the same tie are admitted all together or not at all (a tenant's limit and its
   * group's fair-share limit), whatever the mode does with the other items. A soft limit's item
   * that does not fit borrows from the next item of its tie (its fair-share parent).
   */
  tie?: number;
}

/**
 * - `strict`: each item is admitted only if its full cost fits; a rejected item changes nothing.
 * - `atomic`: as strict, but all items are admitted together or none is (a tenant and its group).
 * - `envoy`: envoyproxy/ratelimit's semantics: fixed windows count every hit, admitted or not.
 */
export type CheckMode = "strict" | "atomic" | "envoy";

/** One gateway's counts for one key since its last report. */
export interface ReportEntry {
  /** Units admitted locally since the last report. */
  admitted: number;
  /** Units rejected locally since the last report (they show the demand). */
  rejected: number;
  /** Concurrency: units the gateway holds now. */
  held: number;
  /**
   * Re-sent after a generation change: the gateway's units admitted in the limit's current window
   * (including `admitted`), so an owner that replaced a crashed one rebuilds the count.
   */
  windowAdmitted: number;
  /**
   * Units given back by settled tickets (estimate above the actual cost), taken off the counter
   * once; at most what this gateway put into the counter's current window (windowed algorithms).
   */
  refunded?: number;
}

/** A bound on the engine's state is reached: counters in all, or leases on one key. */
export class CapacityError extends ShardlimitError {
  constructor(max: number, message = `the server holds its maximum of ${max} counters; try again later`) {
    super("COUNTERS_EXHAUSTED", message);
  }
}

/** What a limit marked `unlimited` answers: always allowed, nothing counted. */
export const UNLIMITED_DECISION: Decision = {
  allowed: true,
  shadowed: false,
  remaining: Number.POSITIVE_INFINITY,
  resetAt: 0,
  retryAt: 0,
};
