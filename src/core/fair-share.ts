/**
 * Max-min fair division of `capacity` among demands: every demand below the water level is met
 * in full, and the rest share what is left equally. Returns the water level; Infinity when the
 * capacity covers every demand.
 */
export function waterLevel(demands: number[], capacity: number): number {
  let total = 0;
  for (const d of demands) total += d;
  if (total <= capacity) return Number.POSITIVE_INFINITY;
  if (capacity <= 0) return 0;
  demands.sort((a, b) => a - b);
  let remaining = capacity;
  const n = demands.length;
  for (let i = 0; i < n; i++) {
    const d = demands[i]!;
    const even = remaining / (n - i);
    if (d >= even) return even;
    remaining -= d;
  }
  return remaining; // unreachable when total > capacity; kept for the type checker
}
