import { constants, PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
import client from "prom-client";
import { POOL_MODES, type PoolSnapshot } from "../core/pool.js";
import { PRIORITIES } from "../core/priority.js";
import { FastHistogram } from "./fast-histogram.js";

/** What the request path records. Narrow, so tests and benchmarks can pass a no-op. */
export interface LimiterMetrics {
  /** Synchronous decisions (Check, ShouldRateLimit, Acquire), by API, domain and result. */
  decision(api: string, domain: string, result: DecisionResult, n?: number): void;
  /** Units gateways reported for a domain in batched mode. */
  reported(domain: string, admitted: number, rejected: number): void;
  policy(kind: number): void;
  itemError(api: string, code: string): void;
  report(entries: number, duplicate: boolean): void;
  /**
   * Units decided for a tenant of a `fair_share` limit, or for a priority class: admitted,
   * rejected, or admitted on borrowed capacity (a soft limit over itself).
   */
  tenant(domain: string, tenant: string, priority: string, result: TenantResult, units: number): void;
}

export type TenantResult = "admitted" | "rejected" | "borrowed";

/** Tenants named one by one in metrics; the rest share the label `(other)`, so series stay bounded. */
export const MAX_TENANT_LABELS = 200;

export type DecisionResult = "ok" | "over_limit" | "shadow_over_limit" | "no_limit";

export const noopMetrics: LimiterMetrics = {
  decision() {},
  reported() {},
  policy() {},
  itemError() {},
  report() {},
  tenant() {},
};

/**
 * A counter whose values accumulate in `values` (keyed by label values joined with NUL) between
 * scrapes, and are moved into prom-client when it collects.
 */
export function mapCounter(
  registry: client.Registry,
  name: string,
  help: string,
  labelNames: string[],
  values: Map<string, number>,
): void {
  new client.Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      for (const [k, v] of values) {
        const parts = k.split("\u0000");
        this.labels(Object.fromEntries(labelNames.map((l, i) => [l, parts[i] ?? ""]))).inc(v);
      }
      values.clear();
    },
  });
}

/**
 * `shardlimit_heap_live_bytes`: V8's heap in use as of the latest major (mark-compact) GC, read
 * when that GC is reported (the next turn of the event loop), so it is what survived the GC plus
 * at most one turn's allocations. `nodejs_heap_size_used_bytes` also counts garbage not yet
 * collected, which on a busy server swings by tens of MB between major GCs; this figure grows only
 * when what the process keeps grows, so a leak shows here. 0 until the first major GC.
 */
export function registerLiveHeap(registry: client.Registry): void {
  let live = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if ((e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        live = getHeapStatistics().used_heap_size;
      }
    }
  }).observe({ entryTypes: ["gc"] });
  new client.Gauge({
    name: "shardlimit_heap_live_bytes",
    help: "V8 heap in use as of the latest major GC (what survived it): grows only if retained memory does",
    registers: [registry],
    collect() {
      this.set(live);
    },
  });
}

const POLICY_NAMES = ["unspecified", "allow", "reject_until", "reject_fraction", "grant"];

/**
 * Prometheus metrics. The request path bumps plain numbers in maps; prom-client reads them at
 * scrape time (`collect`), so a report of 500 entries costs no label hashing per entry.
 */
export class PromMetrics implements LimiterMetrics {
  readonly registry = new client.Registry();
  private readonly decisions = new Map<string, number>();
  private readonly decisionKeys = new Map<string, Map<string, Map<DecisionResult, string>>>();
  private readonly reportedUnits = new Map<string, number>();
  private readonly policies = new Array<number>(POLICY_NAMES.length).fill(0);
  private readonly itemErrors = new Map<string, number>();
  private readonly knownDomains = new Set<string>();
  private readonly tenantUnits = new Map<string, number>();
  private readonly tenantLabels = new Set<string>();
  /** By method and code; `child(method, code)` once per label set (server/fast-histogram.ts). */
  readonly requestDuration: FastHistogram;
  readonly reportEntries: client.Histogram;
  readonly configReloads: client.Counter<"result">;
  /** Calls and items refused by the authorisation file (server/access.ts); no identities in labels. */
  readonly denied: client.Counter<"method" | "reason">;
  readonly authReloads: client.Counter<"result">;
  duplicates = 0;

  constructor(gauges: {
    counters: () => number;
    clients: () => number;
    ready: () => boolean;
    /** Check requests waiting for units (max_wait_ms). */
    checkWaiting?: () => number;
  }) {
    const r = this.registry;
    client.collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 10 });
    registerLiveHeap(r);
    const self = this;
    mapCounter(
      r,
      "shardlimit_decisions_total",
      "Synchronous decisions by API, domain and result",
      ["api", "domain", "result"],
      this.decisions,
    );
    mapCounter(
      r,
      "shardlimit_reported_units_total",
      "Units gateways reported in batched mode, by domain and local result",
      ["domain", "result"],
      this.reportedUnits,
    );
    new client.Counter({
      name: "shardlimit_policies_total",
      help: "Batched-mode policies sent, by kind",
      labelNames: ["kind"],
      registers: [r],
      collect() {
        self.policies.forEach((v, i) => {
          if (v > 0) this.labels({ kind: POLICY_NAMES[i]! }).inc(v);
        });
        self.policies.fill(0);
      },
    });
    mapCounter(
      r,
      "shardlimit_tenant_units_total",
      `Units decided per tenant of a fair_share limit and per priority class, by result (admitted, rejected, borrowed); tenants past the first ${MAX_TENANT_LABELS} are "(other)"`,
      ["domain", "tenant", "priority", "result"],
      this.tenantUnits,
    );
    mapCounter(
      r,
      "shardlimit_item_errors_total",
      "Per-item errors in batch answers, by API and code",
      ["api", "code"],
      this.itemErrors,
    );
    new client.Counter({
      name: "shardlimit_duplicate_reports_total",
      help: "Reports whose (client id, sequence number) had been applied already",
      registers: [r],
      collect() {
        this.inc(self.duplicates);
        self.duplicates = 0;
      },
    });
    new client.Gauge({
      name: "shardlimit_counters",
      help: "Counters held in memory",
      registers: [r],
      collect() {
        this.set(gauges.counters());
      },
    });
    new client.Gauge({
      name: "shardlimit_clients",
      help: "Gateways with report state on this server",
      registers: [r],
      collect() {
        this.set(gauges.clients());
      },
    });
    new client.Gauge({
      name: "shardlimit_check_waiting",
      help: "Check requests waiting for their units (max_wait_ms)",
      registers: [r],
      collect() {
        this.set(gauges.checkWaiting?.() ?? 0);
      },
    });
    new client.Gauge({
      name: "shardlimit_ready",
      help: "1 when the server is ready to serve",
      registers: [r],
      collect() {
        this.set(gauges.ready() ? 1 : 0);
      },
    });
    this.requestDuration = new FastHistogram(
      "shardlimit_request_duration_seconds",
      "gRPC request handling time on the server, by method and status code",
      ["method", "code"],
      [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25],
      r,
    );
    this.reportEntries = new client.Histogram({
      name: "shardlimit_report_entries",
      help: "Entries per ReportAndGetPolicy request",
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
      registers: [r],
    });
    this.configReloads = new client.Counter({
      name: "shardlimit_config_reloads_total",
      help: "Configuration reloads by result",
      labelNames: ["result"],
      registers: [r],
    });
    this.denied = new client.Counter({
      name: "shardlimit_denied_total",
      help: "Calls (or items of a batch) refused by the authorisation file, by method and reason",
      labelNames: ["method", "reason"],
      registers: [r],
    });
    this.authReloads = new client.Counter({
      name: "shardlimit_auth_reloads_total",
      help: "Authorisation file reloads by result (a bad file keeps the previous one)",
      labelNames: ["result"],
      registers: [r],
    });
  }

  /** Domains outside the config are folded into one label value so cardinality stays bounded. */
  setDomains(domains: readonly string[]): void {
    this.knownDomains.clear();
    for (const d of domains) this.knownDomains.add(d);
  }

  private domainLabel(domain: string): string {
    return this.knownDomains.has(domain) ? domain : "(unknown)";
  }

  decision(api: string, domain: string, result: DecisionResult, n = 1): void {
    // The map key of (api, domain, result), made once: this runs for every descriptor and item.
    let byDomain = this.decisionKeys.get(api);
    if (byDomain === undefined) {
      byDomain = new Map();
      this.decisionKeys.set(api, byDomain);
    }
    const label = this.domainLabel(domain);
    let byResult = byDomain.get(label);
    if (byResult === undefined) {
      byResult = new Map();
      byDomain.set(label, byResult);
    }
    let k = byResult.get(result);
    if (k === undefined) {
      k = `${api}\u0000${label}\u0000${result}`;
      byResult.set(result, k);
    }
    this.decisions.set(k, (this.decisions.get(k) ?? 0) + n);
  }

  reported(domain: string, admitted: number, rejected: number): void {
    const d = this.domainLabel(domain);
    if (admitted > 0)
      this.reportedUnits.set(
        `${d}\u0000admitted`,
        (this.reportedUnits.get(`${d}\u0000admitted`) ?? 0) + admitted,
      );
    if (rejected > 0)
      this.reportedUnits.set(
        `${d}\u0000rejected`,
        (this.reportedUnits.get(`${d}\u0000rejected`) ?? 0) + rejected,
      );
  }

  policy(kind: number): void {
    this.policies[kind] = (this.policies[kind] ?? 0) + 1;
  }

  itemError(api: string, code: string): void {
    const k = `${api}\u0000${code}`;
    this.itemErrors.set(k, (this.itemErrors.get(k) ?? 0) + 1);
  }

  report(entries: number, duplicate: boolean): void {
    this.reportEntries.observe(entries);
    if (duplicate) this.duplicates++;
  }

  tenant(domain: string, tenant: string, priority: string, result: TenantResult, units: number): void {
    if (!(units > 0)) return;
    let t = tenant;
    if (!this.tenantLabels.has(t)) {
      if (this.tenantLabels.size < MAX_TENANT_LABELS) this.tenantLabels.add(t);
      else t = "(other)";
    }
    const k = `${this.domainLabel(domain)}\u0000${t}\u0000${priority}\u0000${result}`;
    this.tenantUnits.set(k, (this.tenantUnits.get(k) ?? 0) + units);
  }
}

/** What the pool gauges read at each scrape (server/pools.ts `snapshots`). */
export interface PoolGaugeSource {
  snapshots(): readonly PoolSnapshot[];
}

/**
 * Issue 14: each pool's mode, utilisation, controller state and per-class rejected fractions,
 * read at scrape time. Pools are few (the config names them), so their names are labels as they
 * are. Only pools this server has live backends for (it owns the pool's key) have values.
 */
export function registerPoolMetrics(registry: client.Registry, source: PoolGaugeSource): void {
  const live = () => source.snapshots().filter((p) => p.backends > 0);
  const gauge = (name: string, help: string, value: (p: PoolSnapshot) => number) =>
    new client.Gauge({
      name,
      help,
      labelNames: ["pool"],
      registers: [registry],
      collect() {
        this.reset();
        for (const p of live()) this.labels({ pool: p.name }).set(value(p));
      },
    });
  gauge(
    "shardlimit_pool_utilisation",
    "Capacity-weighted utilisation the pool's live backends report",
    (p) => p.utilisation,
  );
  gauge("shardlimit_pool_target", "Utilisation the pool's controller holds it at", (p) => p.target);
  gauge(
    "shardlimit_pool_level",
    "The controller's output: below 0 the pool admits e^level of its offered load, above 0 it lends level x target x capacity",
    (p) => p.level,
  );
  gauge("shardlimit_pool_integral", "The controller's integral term", (p) => p.integral);
  gauge("shardlimit_pool_backends", "Live backends reporting the pool's utilisation", (p) => p.backends);
  gauge(
    "shardlimit_pool_capacity_units_per_second",
    "Units per second the pool's live backends serve",
    (p) => p.capacity,
  );
  gauge(
    "shardlimit_pool_lending_units_per_second",
    "Idle capacity lent to requests over their quotas (idle mode)",
    (p) => p.lending,
  );
  new client.Gauge({
    name: "shardlimit_pool_mode",
    help: "1 for the pool's current mode (quota, overloaded, idle), 0 for the others",
    labelNames: ["pool", "mode"],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of live())
        for (const m of POOL_MODES) this.labels({ pool: p.name, mode: m }).set(m === p.mode ? 1 : 0);
    },
  });
  new client.Gauge({
    name: "shardlimit_pool_reject_fraction",
    help: "Fraction of a class's requests the pool sheds while overloaded",
    labelNames: ["pool", "priority"],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of live()) {
        for (let i = 0; i < PRIORITIES.length; i++) {
          this.labels({ pool: p.name, priority: PRIORITIES[i]! }).set(p.fractions[i] ?? 0);
        }
      }
    },
  });
}
