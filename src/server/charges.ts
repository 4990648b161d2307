import type { Resolved } from "../config/types.js";
import type { CheckItem, Decision } from "../core/decision.js";
import { PRIORITIES, PRIORITY_RANK } from "../core/priority.js";
import { PriorityMsg } from "../protocol/messages.js";
import type { LimiterMetrics } from "./metrics.js";

/**
 * What one resolved request item charges on the engine: its own limit and, under a `fair_share`
 * limit, the group's too with the tenant as subject, decided together (one tie). Both services
 * that decide (own `Check`, Envoy's `ShouldRateLimit`) build their engine items here and read the
 * answer back with `joined`.
 */

/** Appends the engine items for `r`; returns how many (1 or 2). */
export function addCharges(
  items: CheckItem[],
  r: Resolved,
  cost: number,
  rank: number | undefined,
  tie: number,
): number {
  const own: CheckItem = { key: r.counterKey, limit: r.rule, cost, shard: r.shardKey };
  if (rank !== undefined) own.rank = rank;
  if (r.subject !== undefined) {
    own.subject = r.subject.id;
    own.weight = r.subject.weight;
  }
  const p = r.parent;
  if (p === undefined) {
    items.push(own);
    return 1;
  }
  own.tie = tie;
  const parent: CheckItem = { key: p.counterKey, limit: p.rule, cost, shard: p.shardKey, tie };
  if (rank !== undefined) parent.rank = rank;
  if (p.subject !== undefined) {
    parent.subject = p.subject.id;
    parent.weight = p.subject.weight;
  }
  items.push(own, parent);
  return 2;
}

/**
 * The answer for an item charged as `count` engine decisions from `at`: the tie's verdict (one
 * for all), and the limit that answers for it: the one that rejected, else the tighter one.
 */
export function joined(
  decisions: readonly Decision[],
  at: number,
  count: number,
  r: Resolved,
  cost: number,
): { decision: Decision; resolved: Resolved; borrowed: boolean } {
  const own = decisions[at]!;
  const borrowed = own.borrowed === true;
  if (count === 1 || r.parent === undefined) return { decision: own, resolved: r, borrowed };
  const parent = decisions[at + 1]!;
  // Rejected together: the tenant's own limit answers when it had no room itself, else the
  // group's (full, or pacing this tenant at its share).
  const parentAnswers = own.allowed ? parent.remaining < own.remaining : own.remaining >= cost;
  return parentAnswers
    ? { decision: parent, resolved: r.parent, borrowed }
    : { decision: own, resolved: r, borrowed };
}

/**
 * Counts a decision in the per-tenant and per-class metrics, for requests that name a tenant
 * (under a `fair_share` limit) or a class; others are counted by domain only.
 */
export function countTenant(
  metrics: Pick<LimiterMetrics, "tenant">,
  r: Resolved,
  rank: number | undefined,
  allowed: boolean,
  borrowed: boolean,
  units: number,
): void {
  const subject = r.parent?.subject ?? r.subject;
  if (subject === undefined && rank === undefined) return;
  const priority = PRIORITIES[rank ?? PRIORITY_RANK.normal] ?? "normal";
  const result = !allowed ? "rejected" : borrowed ? "borrowed" : "admitted";
  metrics.tenant(r.rule.domain, subject?.id ?? "", priority, result, units);
}

const RANK_OF_MSG: readonly number[] = [
  PRIORITY_RANK.normal,
  PRIORITY_RANK.low,
  PRIORITY_RANK.high,
  PRIORITY_RANK.critical,
];

/** The class rank of a wire `Priority`; undefined for a number outside the enum. */
export function rankOfPriority(p: number | undefined): number | undefined {
  if (p === undefined || p === PriorityMsg.NORMAL) return PRIORITY_RANK.normal;
  return Number.isInteger(p) ? RANK_OF_MSG[p] : undefined;
}
