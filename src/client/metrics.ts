import client from "prom-client";
import type { GatewayLimiter } from "./gateway-limiter.js";

/** Keys in fallback listed by name, at most this many (label cardinality stays bounded). */
const MAX_FALLBACK_KEYS = 50;

/**
 * Prometheus metrics of one gateway limiter, read from it at scrape time so the request path
 * pays nothing: keys tracked, keys in fallback (and which, up to 50), reports, units decided.
 */
export function registerClientMetrics(registry: client.Registry, limiter: GatewayLimiter): void {
  new client.Gauge({
    name: "shardlimit_client_keys",
    help: "Counters this gateway tracks",
    registers: [registry],
    collect() {
      this.set(limiter.stats().keys);
    },
  });
  new client.Gauge({
    name: "shardlimit_client_fallback_keys",
    help: "Counters decided by the local fallback share because their owner is unreachable",
    registers: [registry],
    collect() {
      this.set(limiter.stats().fallbackKeys);
    },
  });
  new client.Gauge({
    name: "shardlimit_client_fallback",
    help: `1 per counter key in fallback (at most ${MAX_FALLBACK_KEYS} listed)`,
    labelNames: ["key"],
    registers: [registry],
    collect() {
      this.reset();
      for (const key of limiter.fallbackKeys(MAX_FALLBACK_KEYS)) this.set({ key }, 1);
    },
  });
  new client.Gauge({
    name: "shardlimit_client_generation",
    help: "Assignment generation the gateway routes reports by",
    registers: [registry],
    collect() {
      this.set(limiter.stats().generation);
    },
  });
  new client.Counter({
    name: "shardlimit_client_reports_total",
    help: "Reports sent to owners, by result",
    labelNames: ["result"],
    registers: [registry],
    collect() {
      const s = limiter.stats();
      this.reset();
      this.inc({ result: "sent" }, s.reportsSent);
      this.inc({ result: "failed" }, s.reportsFailed);
      this.inc({ result: "too_old" }, s.reportsTooOld);
    },
  });
  new client.Counter({
    name: "shardlimit_client_units_total",
    help: "Units decided locally and reported, by result (admitted or rejected)",
    labelNames: ["result"],
    registers: [registry],
    collect() {
      const s = limiter.stats();
      this.reset();
      this.inc({ result: "admitted" }, s.unitsAdmitted);
      this.inc({ result: "rejected" }, s.unitsRejected);
    },
  });
}
