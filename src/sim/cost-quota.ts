import { GatewayLimiter } from "../client/gateway-limiter.js";
import { compileSources } from "../config/load.js";
import { ManualClock } from "../core/clock.js";
import { seededRandom } from "../core/random.js";
import type { ScenarioResult } from "./accuracy.js";
import { SimNetwork } from "./network.js";
import { SimCluster } from "./sim-cluster.js";
import { T0 } from "./simulation.js";

/**
 * Scenario M (CPU quota, issue 14): tenants with quotas of CPU-seconds per second, requests whose
 * CPU cost is log-normal (heavy-tailed: sigma 1.2, mean 20 ms) and known only when the request
 * ends (20 ms plus ten times its CPU time later). Each request goes through `begin` on one of five
 * gateways (the key's predicted cost charged, from a prior of 50 ms: wrong on purpose) and
 * `finish` with the measured cost. Some tenants ask for more than their quota, some for less.
 * What counts is the measured CPU time of the requests admitted: a tenant over its quota should
 * use it, within [0.97, 1.03]; one under it should have every request admitted.
 */

export interface CostTenant {
  name: string;
  /** CPU-seconds per second. */
  quota: number;
  /** Demand over quota, in CPU-seconds. */
  load: number;
}

export const COST_TENANTS: readonly CostTenant[] = [
  { name: "a", quota: 4, load: 2 },
  { name: "b", quota: 2, load: 1.5 },
  { name: "c", quota: 1, load: 1.2 },
  { name: "d", quota: 2, load: 0.6 },
  { name: "e", quota: 1, load: 0.3 },
];

const MEAN_COST = 0.02;
const SIGMA = 1.2;
/** The log-normal's mu for that mean: mean = exp(mu + sigma^2 / 2). */
const MU = Math.log(MEAN_COST) - (SIGMA * SIGMA) / 2;
const PRIOR = 0.05;
/**
 * Seconds of quota a tenant may use at once: a heavy-tailed cost settled after serving must not
 * throttle a tenant well under its quota, and a tenant over it spends this within 50 s.
 */
const BURST_S = 10;

export function costQuotaYaml(tenants: readonly CostTenant[] = COST_TENANTS, prior = PRIOR): string {
  const rules = tenants.map(
    (t) => `  - key: tenant
    value: ${t.name}
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: ${t.quota}
      burst: ${t.quota * BURST_S}
      resource: { name: cpu_seconds, prior: ${prior} }
`,
  );
  return `domain: sim\ndescriptors:\n${rules.join("")}`;
}

export interface CostQuotaSpec {
  seconds: number;
  /** Measured from here (s): each bucket starts full, `BURST_S` seconds' worth. */
  from: number;
  seed: number;
  gateways?: number;
  tenants?: readonly CostTenant[];
  /**
   * How a request is charged at decision time: `predicted` (`begin`: the key's prediction, the
   * default) or `prior` (`reserve` with the prior, never learning): what the prediction is worth.
   */
  charge?: "predicted" | "prior";
  /** The rule's `resource.prior` (default 0.05 s, 2.5 times the mean cost). */
  prior?: number;
}

export interface TenantUse {
  name: string;
  quota: number;
  /** Demand over quota, as offered. */
  load: number;
  /** Requests and measured CPU-seconds offered and admitted in the measured span. */
  requestsOffered: number;
  requestsAdmitted: number;
  offered: number;
  used: number;
  /** Measured use per second over the quota. */
  ratio: number;
  /** The key's predicted cost at the end, in CPU-seconds, on gateway 0. */
  predicted: number;
}

export interface CostQuotaRun {
  tenants: TenantUse[];
  wallMs: number;
}

/** One standard normal draw (Box-Muller). */
function normal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

export function simulateCostQuota(spec: CostQuotaSpec): CostQuotaRun {
  const started = performance.now();
  const tenants = spec.tenants ?? COST_TENANTS;
  const random = seededRandom(spec.seed);
  const clock = new ManualClock(T0 - 1000);
  const config = compileSources([{ file: "sim.yaml", text: costQuotaYaml(tenants, spec.prior) }]);
  const cluster = new SimCluster(clock, config, 3);
  const net = new SimNetwork(clock, cluster, { delayMs: 0.25, jitterMs: 0.25, loss: 0, random });
  const addresses = cluster.servers.map((s) => s.member.address);
  const gateways = Array.from({ length: spec.gateways ?? 5 }, (_, g) => {
    const gw = new GatewayLimiter({ servers: addresses, clientId: `gw${g}`, transport: net, clock, random });
    gw.start();
    return gw;
  });
  const end = T0 + spec.seconds * 1000;
  const measureFrom = T0 + spec.from * 1000;
  const use = tenants.map((t) => ({
    name: t.name,
    quota: t.quota,
    load: t.load,
    requestsOffered: 0,
    requestsAdmitted: 0,
    offered: 0,
    used: 0,
    ratio: 0,
    predicted: 0,
  }));

  tenants.forEach((t, i) => {
    const key = `sim/tenant=${t.name}`;
    const perS = (t.quota * t.load) / MEAN_COST;
    const u = use[i]!;
    const gap = () => (-Math.log(1 - random()) * 1000) / perS;
    const arrive = (): void => {
      const now = clock.now();
      const cost = Math.exp(MU + SIGMA * normal(random));
      const gw = gateways[Math.floor(random() * gateways.length)]!;
      const ticket = spec.charge === "prior" ? gw.reserve(key, spec.prior ?? PRIOR) : gw.begin(key);
      const measured = now >= measureFrom;
      if (measured) {
        u.requestsOffered++;
        u.offered += cost;
      }
      if (ticket !== null) {
        if (measured) {
          u.requestsAdmitted++;
          u.used += cost;
        }
        clock.after(20 + cost * 10_000, () => ticket.finish(cost));
      }
      const next = gap();
      if (now + next < end) clock.after(next, arrive);
    };
    clock.after(1000 + gap(), arrive);
  });
  clock.runUntil(end);
  const span = spec.seconds - spec.from;
  for (const [i, u] of use.entries()) {
    u.ratio = u.used / (u.quota * span);
    u.predicted = gateways[0]!.predictedCost(`sim/tenant=${tenants[i]!.name}`) ?? 0;
  }
  for (const gw of gateways) gw.close();
  return { tenants: use, wallMs: performance.now() - started };
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

export interface CostQuotaScenario {
  name: string;
  run(): ScenarioResult;
}

const MIN = 0.97;
const MAX = 1.03;
const UNDER_ADMITTED = 0.999;

/** Scenario M, as `shardlimit bench accuracy` reports it. */
export function costQuotaScenarios(quick: boolean, seed: number): CostQuotaScenario[] {
  const seconds = quick ? 300 : 600;
  const from = 90;
  const name =
    "M. CPU quota: 5 tenants with CPU-second quotas, log-normal costs (mean 20 ms, sigma 1.2), predicted then settled, 5 gateways";
  return [
    {
      name,
      run: () => {
        const r = simulateCostQuota({ seconds, from, seed });
        const over = r.tenants.filter((t) => t.load > 1);
        const under = r.tenants.filter((t) => t.load <= 1);
        const admittedShare = (t: TenantUse) => t.requestsAdmitted / Math.max(1, t.requestsOffered);
        const pass =
          over.every((t) => t.ratio >= MIN && t.ratio <= MAX) &&
          under.every((t) => admittedShare(t) >= UNDER_ADMITTED);
        const quota = r.tenants.reduce((s, t) => s + t.quota, 0);
        const span = seconds - from;
        const used = r.tenants.reduce((s, t) => s + t.used, 0);
        const detail: Record<string, number | number[]> = {};
        for (const t of r.tenants) {
          detail[`${t.name}_quota`] = t.quota;
          detail[`${t.name}_demand`] = round(t.offered / span / t.quota);
          detail[`${t.name}_used_over_quota`] = round(t.ratio);
          detail[`${t.name}_requests_admitted`] = round(admittedShare(t));
          detail[`${t.name}_predicted_cost`] = round(t.predicted);
        }
        if (!quick) {
          // For comparison: the prior charged and never learned (settled all the same).
          const prior = simulateCostQuota({ seconds, from, seed, charge: "prior" });
          detail.prior_charged_used_over_quota = prior.tenants.map((t) => round(t.ratio));
          detail.prior_charged_under_quota_admitted = prior.tenants
            .filter((t) => t.load <= 1)
            .map((t) => round(admittedShare(t)));
          detail.prior_charged_sim_wall_ms = Math.round(prior.wallMs);
        }
        return {
          name,
          limit: quota,
          offered: round(r.tenants.reduce((s, t) => s + t.offered, 0)),
          admitted: round(used),
          ratio: round(Math.min(...over.map((t) => t.ratio))),
          pass,
          target: `each tenant over its quota uses [${MIN}, ${MAX}] of it (ratio: the lowest); each under it has >= ${UNDER_ADMITTED} of its requests admitted`,
          from_s: from,
          to_s: seconds,
          ideal_admitted: round(r.tenants.reduce((s, t) => s + Math.min(t.offered, t.quota * span), 0)),
          detail,
          sim_wall_ms: Math.round(r.wallMs),
          reports: 0,
          failed_reports: 0,
        };
      },
    },
  ];
}
