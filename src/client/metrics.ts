import client from "prom-client";
import { PRIORITIES } from "../config/types.js";
import type { GatewayLimiter } from "./gateway-limiter.js";
import type { HostGuard } from "./host-guard.js";

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
  if (limiter.guard) registerHostGuardMetrics(registry, limiter.guard);
}

/** The host guard's figures, read at scrape time: signals against thresholds, shedding by class. */
export function registerHostGuardMetrics(registry: client.Registry, guard: HostGuard): void {
  new client.Gauge({
    name: "shardlimit_client_host_guard_signal",
    help: "The host guard's latest reading of each load signal (NaN: no reading)",
    labelNames: ["signal"],
    registers: [registry],
    collect() {
      for (const [signal, v] of Object.entries(guard.state().readings)) this.set({ signal }, v);
    },
  });
  new client.Gauge({
    name: "shardlimit_client_host_guard_threshold",
    help: "The threshold of each load signal",
    labelNames: ["signal"],
    registers: [registry],
    collect() {
      for (const [signal, v] of Object.entries(guard.state().thresholds)) this.set({ signal }, v);
    },
  });
  new client.Gauge({
    name: "shardlimit_client_host_guard_shed_fraction",
    help: "Fraction of each priority class's requests the host guard sheds now",
    labelNames: ["priority"],
    registers: [registry],
    collect() {
      for (const priority of PRIORITIES) this.set({ priority }, guard.shedFraction(priority));
    },
  });
  new client.Counter({
    name: "shardlimit_client_host_guard_requests_total",
    help: "Requests the host guard decided, by priority class and result (admitted or shed)",
    labelNames: ["priority", "result"],
    registers: [registry],
    collect() {
      const s = guard.state();
      this.reset();
      for (const priority of PRIORITIES) {
        this.inc({ priority, result: "admitted" }, s.admitted[priority]);
        this.inc({ priority, result: "shed" }, s.rejected[priority]);
      }
    },
  });
}
