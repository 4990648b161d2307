import type { Resolved } from "./types.js";

/**
 * Applies `replaces` across the descriptors of one request, as envoyproxy/ratelimit does
 * (src/service/ratelimit.go, constructLimitsToCheck): every matched rule, unlimited ones
 * included, contributes the names it replaces; then every matched rule carrying one of those
 * names is dropped, so its counter is neither checked nor charged. Positions are kept so the
 * result still lines up with the request's descriptors.
 */
export function applyReplaces<T extends Resolved | undefined>(resolved: readonly T[]): (T | undefined)[] {
  // Most requests match no rule that replaces another: find out without allocating a set.
  if (!resolved.some((r) => r !== undefined && r.rule.replaces.length > 0)) return resolved.slice();
  const replaced = new Set<string>();
  for (const r of resolved) {
    if (r !== undefined) for (const name of r.rule.replaces) replaced.add(name);
  }
  if (replaced.size === 0) return [...resolved];
  return resolved.map((r) => (r?.rule.name !== undefined && replaced.has(r.rule.name) ? undefined : r));
}
