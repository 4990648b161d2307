import { EnvoyRlqsClient } from "./rlqs-client.js";

/**
 * Issue 15's RLQS case: `streams` Envoy-like RLQS clients, spread over `addresses`, each offered
 * `ratePerStream` requests a second into one bucket, for `warmupSeconds` and then `seconds`
 * measured. The bucket maps (by the servers' `rlqs:` file) to one limited key; what the clients
 * admit over the measured span is compared with the limit.
 */
export interface RlqsLoadOptions {
  addresses: readonly string[];
  domain: string;
  bucket: Record<string, string>;
  streams: number;
  ratePerStream: number;
  reportIntervalMs: number;
  warmupSeconds: number;
  seconds: number;
}

export interface RlqsLoadResult {
  /** Requests offered and admitted over the measured span, and its length. */
  offered: number;
  admitted: number;
  seconds: number;
  /** Admitted per second over the measured span, per stream (min and max). */
  perStreamMin: number;
  perStreamMax: number;
  assignments: number;
  /** The longest gap between the load loop's steps (5 ms apart when this process is not starved). */
  maxStepMs: number;
  /** Streams the servers ended before the run did (each with its status). */
  ended: string[];
}

/**
 * The limit of the case: one key at 1000/s, a token bucket with its default burst (a second's
 * units), so an overshoot is paid back and units a stream could not use in time are handed out
 * again.
 */
export const RLQS_LIMITS = `
domain: api
descriptors:
  - key: tenant
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000 }
`;
/** The servers' `rlqs:` file for it: bucket `{tenant: X}` of domain envoy is `api/tenant=X`. */
export const RLQS_MAPPING = `
rlqs:
  mappings:
    - domain: envoy
      limit_domain: api
      descriptors:
        - { key: tenant, bucket_key: tenant }
`;

const STEP_MS = 5;

export async function runRlqsLoad(o: RlqsLoadOptions): Promise<RlqsLoadResult> {
  const clients = Array.from(
    { length: o.streams },
    (_, i) =>
      new EnvoyRlqsClient({
        address: o.addresses[i % o.addresses.length]!,
        domain: o.domain,
        reportIntervalMs: o.reportIntervalMs,
      }),
  );
  const ended: string[] = [];
  for (const c of clients) void c.ended.then((s) => ended.push(`${s.code} ${s.details}`));
  const debt = clients.map(() => 0);
  let offered = 0;
  let measuring = false;
  let from: number[] = [];
  let measuredFrom = 0;
  const t0 = performance.now();
  let last = t0;
  let maxStepMs = 0;
  const endAt = t0 + (o.warmupSeconds + o.seconds) * 1000;
  try {
    for (;;) {
      await new Promise((r) => setTimeout(r, STEP_MS));
      const now = performance.now();
      if (!measuring && now - t0 >= o.warmupSeconds * 1000) {
        measuring = true;
        measuredFrom = now;
        from = clients.map((c) => c.allowed);
      }
      if (now >= endAt) break;
      if (measuring) maxStepMs = Math.max(maxStepMs, now - last);
      const dt = (now - last) / 1000;
      last = now;
      clients.forEach((c, i) => {
        debt[i]! += o.ratePerStream * dt;
        while (debt[i]! >= 1) {
          debt[i]! -= 1;
          c.request(o.bucket);
          if (measuring) offered++;
        }
      });
    }
    const seconds = (performance.now() - measuredFrom) / 1000;
    const per = clients.map((c, i) => (c.allowed - from[i]!) / seconds);
    return {
      offered,
      admitted: clients.reduce((n, c, i) => n + c.allowed - from[i]!, 0),
      seconds,
      perStreamMin: Math.min(...per),
      perStreamMax: Math.max(...per),
      assignments: clients.reduce((n, c) => n + c.assignments, 0),
      maxStepMs,
      ended: [...ended],
    };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}
