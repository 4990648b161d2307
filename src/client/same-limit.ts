import type { LimitRule } from "../config/types.js";

/**
 * Fields that name, describe or locate a rule without changing what it admits: a reload that
 * edits only these keeps a key's counter and policy. Every other field of the rule, including
 * any added later, counts (`id` too: it names the counter, and covers `name` and `domain`).
 */
const DESCRIPTIVE: ReadonlySet<string> = new Set([
  "name",
  "domain",
  "unit",
  "costUnit",
  "replaces",
  "source",
] satisfies (keyof LimitRule)[]);

/** The rule's fields that decide what it admits: all of them but the descriptive ones. */
export function limitFields(rule: LimitRule): string[] {
  return Object.keys(rule).filter((f) => !DESCRIPTIVE.has(f));
}

/**
 * Whether two rules limit the same way (a reload recompiles every rule into a new object).
 * Derived from the rules themselves: every limit field of either must be equal in both.
 */
export function sameLimit(a: LimitRule, b: LimitRule): boolean {
  const x = a as unknown as Record<string, unknown>;
  const y = b as unknown as Record<string, unknown>;
  for (const f of limitFields(a)) if (!sameValue(x[f], y[f])) return false;
  for (const f of limitFields(b)) if (!sameValue(x[f], y[f])) return false;
  return true;
}

/**
 * Equal by content: a reload makes new objects for structured fields (`fair_share` weights,
 * `reserve`), which compared by identity would make every such rule look changed.
 */
function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !sameValue(v, b.get(k))) return false;
    return true;
  }
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.every((k) => Object.hasOwn(rb, k) && sameValue(ra[k], rb[k]));
}
