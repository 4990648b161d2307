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

/**
 * Weighted max-min fair division: demand `i` is met in full when `demands[i] <= weights[i] * level`,
 * the rest get `weights[i] * level`, and the level is the one that hands out exactly `capacity`.
 * Returns the level; Infinity when the capacity covers every demand. Weights must be positive.
 * `order` is scratch space (indices), reused by callers that divide often.
 */
export function weightedWaterLevel(
  demands: readonly number[],
  weights: readonly number[],
  capacity: number,
  order: number[] = [],
): number {
  const n = demands.length;
  let total = 0;
  let weight = 0;
  for (let i = 0; i < n; i++) {
    total += demands[i]!;
    weight += weights[i]!;
  }
  if (total <= capacity) return Number.POSITIVE_INFINITY;
  if (capacity <= 0) return 0;
  order.length = n;
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => demands[a]! / weights[a]! - demands[b]! / weights[b]!);
  let remaining = capacity;
  for (const i of order) {
    const level = remaining / weight;
    if (demands[i]! / weights[i]! >= level) return level;
    remaining -= demands[i]!;
    weight -= weights[i]!;
  }
  return remaining / Math.max(weight, Number.MIN_VALUE); // unreachable when total > capacity
}

/**
 * Units kept for senders ahead of a heavy one (within their share, or of a higher class): their
 * expected demand over the span and three Poisson deviations on top, so a burst of theirs rarely
 * finds the counter spent. Shared by the synchronous pacing and the batched policy.
 */
export function headroom(expected: number): number {
  return expected > 0 ? expected + 3 * Math.sqrt(expected) : 0;
}
