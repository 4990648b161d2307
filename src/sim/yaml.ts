/** The config of the single-key scenarios: one token bucket on `sim/k`, `extra` lines appended. */
export function tokenBucket(limit: number, extra = ""): string {
  return `domain: sim
descriptors:
  - key: k
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: ${limit}
${extra}`;
}
