import { GatewayLimiter } from "../client/gateway-limiter.js";
import { decodeKey } from "../config/key.js";
import { compileSources } from "../config/load.js";
import { ManualClock } from "../core/clock.js";
import { Engine } from "../core/engine.js";
import { seededRandom } from "../core/random.js";
import { SimNetwork } from "./network.js";
import { SimCluster } from "./sim-cluster.js";

/** Virtual time at which traffic starts: a whole minute, so windows of any unit start with it. */
export const T0 = 600_000;

export interface SimulationSpec {
  /** The limits, as the servers' YAML. */
  yaml: string;
  /** The key every request is for. */
  key: string;
  servers: number;
  gateways: number;
  seconds: number;
  /** Requests (or bursts) per second gateway `g` offers at virtual ms `t` since T0. */
  rate(g: number, t: number): number;
  /** `rate` changes only at multiples of this (ms since T0); arrivals follow a change at once. */
  rateStepMs?: number;
  /** Requests per arrival (D: bursts of 3). */
  burst?: number;
  /** Cost of one request. */
  cost?: (random: () => number) => number;
  reportIntervalMs?: number;
  delayMs?: number;
  jitterMs?: number;
  loss?: number;
  seed?: number;
  /** Crash the key's owner at this ms since T0. */
  crashAtMs?: number;
  leaseMs?: number;
  /** Client options beyond the defaults (experiments). */
  client?: { resendWindowTotals?: boolean };
  /** Width of the buckets of the admitted-over-time series. */
  bucketMs?: number;
}

export interface SimulationRun {
  offered: number;
  admitted: number;
  /** Admitted units per bucket of `bucketMs` since T0. */
  admittedSeries: number[];
  offeredSeries: number[];
  /** What one exact, central limiter (the same rule, decided synchronously) admits of the same arrivals. */
  idealAdmitted: number;
  idealSeries: number[];
  bucketMs: number;
  reports: number;
  failedReports: number;
  wallMs: number;
}

/**
 * Runs gateways (the real GatewayLimiter) against servers (the real Limiter, Engine and
 * ClusterOwnership) over the in-memory network, on one virtual clock: deterministic for a seed.
 */
export function simulate(spec: SimulationSpec): SimulationRun {
  const started = performance.now();
  const random = seededRandom(spec.seed ?? 1);
  const clock = new ManualClock(T0 - 1000);
  const config = compileSources([{ file: "sim.yaml", text: spec.yaml }]);
  const cluster = new SimCluster(clock, config, spec.servers, spec.leaseMs ?? 3000);
  const net = new SimNetwork(clock, cluster, {
    delayMs: spec.delayMs ?? 0.25,
    jitterMs: spec.jitterMs ?? 0.25,
    loss: spec.loss ?? 0,
    random,
  });
  const addresses = cluster.servers.map((s) => s.member.address);
  const gateways = Array.from({ length: spec.gateways }, (_, g) => {
    const gw = new GatewayLimiter({
      servers: addresses,
      clientId: `gw${g}`,
      transport: net,
      clock,
      random,
      reportIntervalMs: spec.reportIntervalMs ?? 100,
      ...spec.client,
    });
    gw.start();
    return gw;
  });
  const bucketMs = spec.bucketMs ?? 100;
  const end = T0 + spec.seconds * 1000;
  const buckets = Math.ceil((spec.seconds * 1000) / bucketMs);
  const admittedSeries = new Array<number>(buckets).fill(0);
  const offeredSeries = new Array<number>(buckets).fill(0);
  const idealSeries = new Array<number>(buckets).fill(0);
  let idealAdmitted = 0;
  const ideal = new Engine();
  const keyParts = decodeKey(spec.key);
  const resolved =
    typeof keyParts === "string" ? undefined : config.resolve(keyParts.domain, keyParts.entries);
  let offered = 0;
  let admitted = 0;
  const burst = spec.burst ?? 1;
  const cost = spec.cost ?? (() => 1);

  const arrive = (g: number): void => {
    const t = clock.now() - T0;
    const rate = spec.rate(g, t);
    if (rate > 0 && t >= 0) {
      const b = Math.min(buckets - 1, Math.floor(t / bucketMs));
      for (let i = 0; i < burst; i++) {
        const c = cost(random);
        offered += c;
        offeredSeries[b]! += c;
        if (gateways[g]!.decide(spec.key, c)) {
          admitted += c;
          admittedSeries[b]! += c;
        }
        if (
          resolved !== undefined &&
          ideal.check(resolved.counterKey, resolved.rule, c, clock.now()).allowed
        ) {
          idealAdmitted += c;
          idealSeries[b]! += c;
        }
      }
    }
    // Poisson arrivals; an idle gateway looks again every 100 ms in case its rate rises.
    let next = rate > 0 ? (-Math.log(1 - random()) * 1000) / rate : 100;
    // Rates change only at multiples of rateStepMs: an arrival drawn past the next change is
    // drawn again from there at the new rate (exact, as waiting times are memoryless).
    const step = spec.rateStepMs;
    let fresh = true;
    if (step !== undefined && t >= 0) {
      const change = (Math.floor(t / step) + 1) * step - t;
      if (next > change) {
        next = change;
        fresh = false;
      }
    }
    if (clock.now() + next < end) clock.after(next, () => (fresh ? arrive(g) : redraw(g)));
  };
  const redraw = (g: number): void => {
    const rate = spec.rate(g, clock.now() - T0);
    const next = rate > 0 ? (-Math.log(1 - random()) * 1000) / rate : 100;
    if (clock.now() + next < end) clock.after(next, () => arrive(g));
  };
  for (let g = 0; g < spec.gateways; g++) {
    const r = spec.rate(g, 0);
    clock.after(1000 + (r > 0 ? (-Math.log(1 - random()) * 1000) / r : random() * 100), () => arrive(g));
  }
  if (spec.crashAtMs !== undefined) {
    clock.after(1000 + spec.crashAtMs, () => {
      if (resolved !== undefined) cluster.crash(cluster.ownerOf(resolved.shardKey));
    });
  }
  clock.runUntil(end);
  for (const gw of gateways) gw.close();
  let reports = 0;
  let failedReports = 0;
  for (const gw of gateways) {
    reports += gw.reportsSent;
    failedReports += gw.reportsFailed;
  }
  return {
    offered,
    admitted,
    admittedSeries,
    offeredSeries,
    idealAdmitted,
    idealSeries,
    bucketMs,
    reports,
    failedReports,
    wallMs: performance.now() - started,
  };
}
