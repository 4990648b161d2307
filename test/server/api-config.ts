/**
 * One domain with a limit of each kind (every algorithm, a fair-share group, unlimited, shadow):
 * the ratelimiter tests' and the report-columns tests' config.
 */
export const API_CONFIG = `
domain: api
descriptors:
  - key: fw
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: tb
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 10 }
  - key: sw
    rate_limit: { algorithm: sliding_window, unit: minute, requests_per_unit: 10 }
  - key: conc
    rate_limit: { algorithm: concurrency, requests_per_unit: 2, lease_timeout: 10s }
  - key: group
    shard_key: true
    rate_limit: { unit: minute, requests_per_unit: 5 }
    descriptors:
      - key: tenant
        rate_limit: { unit: minute, requests_per_unit: 3 }
  - key: free
    rate_limit: { unlimited: true }
  - key: shadow
    shadow_mode: true
    rate_limit: { unit: minute, requests_per_unit: 1 }
`;
