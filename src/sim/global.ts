import { GatewayLimiter } from "../client/gateway-limiter.js";
import type { ClientTransport, Done } from "../client/transport.js";
import { type GlobalMode, GlobalTier } from "../cluster/global-tier.js";
import { compileSources } from "../config/load.js";
import { ManualClock } from "../core/clock.js";
import { seededRandom } from "../core/random.js";
import type { ReportRequest, ReportResponse } from "../protocol/messages.js";
import type { ScenarioResult } from "./accuracy.js";
import { SimNetwork } from "./network.js";
import { SimCluster } from "./sim-cluster.js";
import { T0 } from "./simulation.js";

/**
 * Global limits across regions (issue 14, seed 003): regional simulated clusters and a global
 * one on one virtual clock. The owner of the key in each region is a gateway of the global tier
 * (the real GlobalTier over the real GatewayLimiter) across a link with a delay between regions;
 * each region's gateways report to their own cluster only. A link can be cut for a while.
 */

export interface RegionSpec {
  name: string;
  /** Requests per second of each of the region's gateways; every one is its own caller. */
  gateways: number[];
}

export interface RegionsSpec {
  /** The limits of every cluster, regional and global (the same `global: true` rule). */
  yaml: string;
  /** The counter key every request is for. */
  key: string;
  regions: RegionSpec[];
  serversPerRegion: number;
  globalServers: number;
  /** One-way delay between a region and the global tier, ms. */
  delayMs: number;
  seconds: number;
  seed: number;
  /** Cut region `region`'s link to the global tier from `fromS` to `toS` (seconds since traffic started). */
  cut?: { region: number; fromS: number; toS: number };
  /** Cut off this long, a region falls back to limit / regions (GlobalTier's default: 30 s). */
  fallbackAfterMs?: number;
  bucketMs?: number;
}

export interface RegionsRun {
  /** Per region, per gateway: requests offered and admitted per bucket since traffic started. */
  offered: number[][][];
  admitted: number[][][];
  bucketMs: number;
  /** The cut region's last share (units/s: the mean of its shares in the last second before the cut). */
  shareAtCut: number;
  /** The cut region's mode at the end of the cut. */
  modeInCut: GlobalMode | "";
  wallMs: number;
}

/** A link that can be cut: while cut, every call fails at its deadline (nothing arrives). */
export class CuttableLink implements ClientTransport {
  cut = false;

  constructor(
    private readonly clock: ManualClock,
    private readonly inner: ClientTransport,
  ) {}

  private lost<T>(timeoutMs: number, done: Done<T>): void {
    this.clock.after(timeoutMs, () => done(new Error(`deadline of ${timeoutMs} ms exceeded (link cut)`)));
  }

  report(address: string, req: ReportRequest, timeoutMs: number, done: Done<ReportResponse>): void {
    if (this.cut) this.lost(timeoutMs, done);
    else this.inner.report(address, req, timeoutMs, done);
  }

  check(...args: Parameters<ClientTransport["check"]>): void {
    if (this.cut) this.lost(args[2], args[3]);
    else this.inner.check(...args);
  }

  clusterView(...args: Parameters<ClientTransport["clusterView"]>): void {
    if (this.cut) this.lost(args[1], args[2]);
    else this.inner.clusterView(...args);
  }

  limits(...args: Parameters<ClientTransport["limits"]>): void {
    if (this.cut) this.lost(args[2], args[3]);
    else this.inner.limits(...args);
  }

  drop(): void {}

  close(): void {}
}

export function simulateRegions(spec: RegionsSpec): RegionsRun {
  const started = performance.now();
  const random = seededRandom(spec.seed);
  const clock = new ManualClock(T0 - 1000);
  const config = compileSources([{ file: "sim.yaml", text: spec.yaml }]);
  const globalCluster = new SimCluster(clock, config, spec.globalServers);
  const globalAddresses = globalCluster.servers.map((s) => s.member.address);
  const tiers: GlobalTier[][] = [];
  const links: CuttableLink[] = [];
  const gateways: GatewayLimiter[][] = [];
  for (const region of spec.regions) {
    const link = new CuttableLink(
      clock,
      new SimNetwork(clock, globalCluster, { delayMs: spec.delayMs, jitterMs: 2, loss: 0, random }),
    );
    links.push(link);
    const regionTiers: GlobalTier[] = [];
    tiers.push(regionTiers);
    const cluster = new SimCluster(clock, config, spec.serversPerRegion, 3000, (member) => {
      const tier = new GlobalTier({
        region: region.name,
        servers: globalAddresses,
        transport: link,
        clock,
        instanceId: member.id,
        random,
        ...(spec.fallbackAfterMs !== undefined ? { fallbackAfterMs: spec.fallbackAfterMs } : {}),
      });
      tier.start();
      regionTiers.push(tier);
      return tier;
    });
    const net = new SimNetwork(clock, cluster, { delayMs: 0.25, jitterMs: 0.25, loss: 0, random });
    const addresses = cluster.servers.map((s) => s.member.address);
    gateways.push(
      region.gateways.map((_, g) => {
        const gw = new GatewayLimiter({
          servers: addresses,
          clientId: `${region.name}-gw${g}`,
          instanceId: "sim",
          transport: net,
          clock,
          random,
        });
        gw.start();
        return gw;
      }),
    );
  }

  const bucketMs = spec.bucketMs ?? 1000;
  const buckets = Math.ceil((spec.seconds * 1000) / bucketMs);
  const series = () => spec.regions.map((r) => r.gateways.map(() => new Array<number>(buckets).fill(0)));
  const offered = series();
  const admitted = series();
  const end = T0 + spec.seconds * 1000;
  const arrive = (r: number, g: number): void => {
    const t = clock.now() - T0;
    const b = Math.min(buckets - 1, Math.floor(t / bucketMs));
    offered[r]![g]![b]!++;
    if (gateways[r]![g]!.decide(spec.key, 1)) admitted[r]![g]![b]!++;
    const next = (-Math.log(1 - random()) * 1000) / spec.regions[r]!.gateways[g]!;
    if (clock.now() + next < end) clock.after(next, () => arrive(r, g));
  };
  spec.regions.forEach((region, r) => {
    region.gateways.forEach((rate, g) => {
      clock.after(1000 + (-Math.log(1 - random()) * 1000) / rate, () => arrive(r, g));
    });
  });

  let shareAtCut = 0;
  let modeInCut: GlobalMode | "" = "";
  const cut = spec.cut;
  /** The region's share as its key's owner holds it (the one tier that has the key). */
  const held = (r: number) => tiers[r]!.flatMap((t) => t.keyStatus()).find((s) => s.key === spec.key);
  if (cut !== undefined) {
    clock.after(1000 + cut.fromS * 1000, () => {
      links[cut.region]!.cut = true;
    });
    clock.after(1000 + cut.toS * 1000 - 1, () => {
      // What it kept to: its last share, settled once the answers still on their way at the cut came in.
      const h = held(cut.region);
      shareAtCut = h?.lastSharePerS ?? 0;
      modeInCut = h?.mode ?? "";
      links[cut.region]!.cut = false;
    });
  }
  clock.runUntil(end);
  for (const gw of gateways.flat()) gw.close();
  for (const t of tiers.flat()) t.close();
  return { offered, admitted, bucketMs, shareAtCut, modeInCut, wallMs: performance.now() - started };
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

function sum(xs: readonly number[], from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to && i < xs.length; i++) s += xs[i]!;
  return s;
}

export interface GlobalScenario {
  name: string;
  run(): ScenarioResult;
}

const Q_YAML = `domain: sim
descriptors:
  - key: k
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 1000
      global: true
`;

/**
 * Q: a global limit of 1000/s over three regions offered 2000/s in 70/20/10, 50 ms between a
 * region and the global tier. Each region has heavy callers and one light one (10/s). Region A's
 * link is cut for 10 s in the middle.
 */
export function globalScenarios(quick: boolean, seed: number): GlobalScenario[] {
  const name =
    "Q. global limit: 1000/s over three regions offered 2000/s in 70/20/10, 50 ms between regions; region A cut off for 10 s";
  return [
    {
      name,
      run: () => {
        const steady = quick ? 15 : 20;
        const cutFor = 10;
        const seconds = steady + cutFor + (quick ? 5 : 10);
        const light = 10;
        const heavy = (total: number, n: number) => Array.from({ length: n }, () => (total - light) / n);
        const regions: RegionSpec[] = [
          { name: "region-a", gateways: [...heavy(1400, 4), light] },
          { name: "region-b", gateways: [...heavy(400, 3), light] },
          { name: "region-c", gateways: [...heavy(200, 2), light] },
        ];
        const run = simulateRegions({
          yaml: Q_YAML,
          key: "sim/k=v",
          regions,
          serversPerRegion: 2,
          globalServers: 2,
          delayMs: 50,
          seconds,
          seed,
          cut: { region: 0, fromS: steady, toS: steady + cutFor },
          bucketMs: 100,
        });
        const perS = 1000 / run.bucketMs;
        const from = 2;
        const regionSum = (xs: number[][][], r: number, a: number, b: number) =>
          xs[r]!.reduce((s, g) => s + sum(g, a * perS, b * perS), 0);
        const all = (xs: number[][][], a: number, b: number) =>
          xs.reduce((s, _r, r) => s + regionSum(xs, r, a, b), 0);
        const admitted = all(run.admitted, from, steady);
        const offered = all(run.offered, from, steady);
        const ratio = admitted / (1000 * (steady - from));
        // In the cut, from one contact timeout after it started (region A notices) to its end.
        const cutFrom = steady + 0.5;
        const cutTo = steady + cutFor;
        const cutRate = regionSum(run.admitted, 0, cutFrom, cutTo) / (cutTo - cutFrom);
        const cutRatio = run.shareAtCut > 0 ? cutRate / run.shareAtCut : 0;
        const after = steady + cutFor + 2;
        const afterRatio = all(run.admitted, after, seconds) / (1000 * (seconds - after));
        const lightShare = regions.map((r, i) => {
          const g = r.gateways.length - 1;
          return round(
            sum(run.admitted[i]![g]!, from * perS, seconds * perS) /
              sum(run.offered[i]![g]!, from * perS, seconds * perS),
          );
        });
        const perRegion = regions.map((_, r) =>
          round(regionSum(run.admitted, r, from, steady) / (steady - from)),
        );
        const pass =
          ratio >= 0.97 &&
          ratio <= 1.03 &&
          cutRatio <= 1.03 &&
          cutRatio >= 0.97 &&
          lightShare.every((x) => x >= 0.99);
        return {
          name,
          limit: 1000,
          offered: round(offered),
          admitted: round(admitted),
          ratio: round(ratio),
          pass,
          target:
            "global [0.97, 1.03] of the limit; region A cut off within [0.97, 1.03] of its last share; each region's light caller >= 0.99 of its demand",
          from_s: from,
          to_s: steady,
          ideal_admitted: round(Math.min(offered, 1000 * (steady - from))),
          detail: {
            region_admitted_per_s: perRegion,
            share_at_cut_per_s: round(run.shareAtCut),
            cut_admitted_per_s: round(cutRate),
            cut_over_last_share: round(cutRatio),
            mode_in_cut: run.modeInCut,
            global_ratio_during_cut: round(all(run.admitted, cutFrom, cutTo) / (1000 * (cutTo - cutFrom))),
            global_ratio_after_cut: round(afterRatio),
            light_share_of_demand: lightShare,
          },
          sim_wall_ms: Math.round(run.wallMs),
          reports: 0,
          failed_reports: 0,
        };
      },
    },
  ];
}
