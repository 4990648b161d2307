import { createLimiter } from "../client/create.js";
import type { GatewayLimiter } from "../client/gateway-limiter.js";
import { sleep, systemClock } from "../core/clock.js";
import type { CliOptions } from "./cli.js";
import { httpGet } from "./http.js";
import { type PacedLag, PacedLoad } from "./paced-load.js";
import { type ServerProcess, serverProcess, writeConfig } from "./serve.js";
import { type ConnectProxy, startConnectProxy } from "./tcp-proxy.js";
import { waitFor } from "./wait.js";

/**
 * A global limit over loopback with real processes (issue 14): a global tier (one standalone
 * `shardlimit serve`) and regional ones (one standalone server each, `--global-tier` through a
 * CONNECT proxy per region on its own thread that delays every chunk and can be cut), with gateways (the real
 * GatewayLimiter over gRPC) in this process sending paced traffic to their own region. Used by
 * the integration test and `bench/global-loopback.ts`.
 */

export interface LoopbackRegion {
  name: string;
  /** Requests per second of each gateway; the last is the region's light caller. */
  gateways: number[];
}

export interface GlobalLoopbackOptions {
  /** The global limit, units per second (a token bucket). */
  limit: number;
  regions: LoopbackRegion[];
  /** One-way delay of the link between a region and the global tier, ms. */
  delayMs: number;
  /** Seconds of traffic before the cut (the first 3 are not measured: start-up). */
  steadyS: number;
  /** Seconds region `cutRegion` is cut off from the global tier, and seconds after. */
  cutS: number;
  afterS: number;
  cutRegion: number;
  /** serve's --global-fallback-after (default: longer than the cut). */
  fallbackAfterMs?: number;
  cli?: CliOptions["cli"];
}

export interface GlobalLoopbackResult {
  limit: number;
  /** Admitted over the limit, all regions, from 3 s to the cut. */
  globalRatio: number;
  /** Admitted per second per region over the same span. */
  regionPerS: number[];
  /** The cut region's share (units/s) as its server's /metrics showed it during the cut: its last share. */
  lastSharePerS: number;
  /** The cut region's mode during the cut, from /metrics. */
  modeInCut: string;
  /** The cut region's admitted per second during the cut (from 1 s after it started). */
  cutPerS: number;
  cutOverLastShare: number;
  /** Seconds of the cut that `cutPerS` is measured over. */
  cutMeasuredS: number;
  /** Admitted over the limit, all regions, from 2 s after the link came back to the end. */
  afterRatio: number;
  /** Each region's light caller: admitted over offered, the whole run from 3 s. */
  lightShare: number[];
  /** How late the traffic generator's ticks came: whether this process kept its schedule. */
  lag: PacedLag;
}

/**
 * Scenario Q's regions over loopback: 2000/s in 70/20/10, three, two and one heavy gateways and a
 * light one (10/s) in each.
 */
export function scenarioQRegions(): LoopbackRegion[] {
  const light = 10;
  const heavy = (total: number, n: number) => Array.from({ length: n }, () => (total - light) / n);
  return [
    { name: "region-a", gateways: [...heavy(1400, 3), light] },
    { name: "region-b", gateways: [...heavy(400, 2), light] },
    { name: "region-c", gateways: [...heavy(200, 1), light] },
  ];
}

/** Scenario Q's config: one token bucket of `limit`/s marked `global: true`, a counter per value of `k`. */
export function globalLimitYaml(limit: number): string {
  return `domain: global
descriptors:
  - key: k
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: ${limit}
      global: true
`;
}

const KEY = "global/k=v";
const BUCKET_MS = 100;
const TICK_MS = 10;

/** A value of a gauge with labels matching `labels` (exact text) in a Prometheus exposition. */
export function gauge(text: string, name: string, labels: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{${labels}}`)) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

export async function runGlobalLoopback(o: GlobalLoopbackOptions): Promise<GlobalLoopbackResult> {
  const config = writeConfig(globalLimitYaml(o.limit));
  const servers: ServerProcess[] = [];
  const proxies: ConnectProxy[] = [];
  const gateways: GatewayLimiter[][] = [];
  let load: PacedLoad | undefined;
  try {
    // The global tier on 127.0.0.2: each region's server reaches it through a CONNECT proxy of its
    // own (grpc_proxy), on a thread of its own, so a stalled generator here does not stretch the link.
    const global = await serverProcess({
      id: "global",
      configPath: config,
      cli: o.cli,
      grpcHost: "127.0.0.2",
    });
    servers.push(global);
    await global.start();
    const regional: ServerProcess[] = [];
    for (const r of o.regions) {
      const proxy = await startConnectProxy({ delayMs: o.delayMs });
      proxies.push(proxy);
      const s = await serverProcess({
        id: r.name,
        configPath: config,
        cli: o.cli,
        env: proxy.env("127.0.0.1"),
        extraArgs: [
          "--global-tier",
          global.address,
          "--region",
          r.name,
          "--global-regions",
          String(o.regions.length),
          "--global-fallback-after",
          String(o.fallbackAfterMs ?? (o.cutS + 30) * 1000),
        ],
      });
      servers.push(s);
      regional.push(s);
      await s.start();
    }
    for (const [i, r] of o.regions.entries()) {
      gateways.push(
        await Promise.all(
          r.gateways.map((_, g) =>
            createLimiter({ servers: [regional[i]!.address], clientId: `${r.name}-gw${g}` }),
          ),
        ),
      );
    }

    // Paced traffic: every tick each gateway gets its rate's worth of requests (fractions carried).
    const seconds = o.steadyS + o.cutS + o.afterS;
    const index = o.regions.map((r, i) =>
      r.gateways.map((_, g) => o.regions.slice(0, i).reduce((n, x) => n + x.gateways.length, 0) + g),
    );
    load = new PacedLoad(
      o.regions.flatMap((r, i) =>
        r.gateways.map((rate, g) => ({ ratePerS: rate, decide: () => gateways[i]![g]!.decide(KEY) })),
      ),
      { seconds, bucketMs: BUCKET_MS, tickMs: TICK_MS },
    );
    const paced = load;
    paced.start();

    const cut = regional[o.cutRegion]!;
    const metrics = async () => (await httpGet(`http://127.0.0.1:${cut.httpPort}/metrics`)).body;
    await sleep(systemClock, o.steadyS * 1000, { ref: true });
    proxies[o.cutRegion]!.cut();
    const cutAt = paced.elapsed();
    // Once the region has noticed (five report intervals), it divides its last share.
    let text = "";
    await waitFor(
      "the cut region to keep to its last share",
      async () => {
        text = await metrics();
        return gauge(text, "shardlimit_global_mode", `key="${KEY}",mode="last_share"`) === 1;
      },
      5000,
      100,
    );
    const lastSharePerS = gauge(text, "shardlimit_global_share_per_second", `key="${KEY}"`) ?? 0;
    await sleep(systemClock, Math.max(0, cutAt + o.cutS * 1000 - paced.elapsed() - 200), {
      ref: true,
    });
    text = await metrics();
    const modeInCut =
      ["connected", "last_share", "fallback"].find(
        (m) => gauge(text, "shardlimit_global_mode", `key="${KEY}",mode="${m}"`) === 1,
      ) ?? "";
    proxies[o.cutRegion]!.restore();
    const restoredAt = paced.elapsed();
    await sleep(systemClock, o.afterS * 1000, { ref: true });
    paced.stop();
    const endAt = paced.elapsed();

    const region = (xs: "offered" | "admitted", i: number, a: number, b: number) =>
      index[i]!.reduce((s, g) => s + paced.sum(xs, g, a, b), 0);
    const all = (xs: "offered" | "admitted", a: number, b: number) =>
      o.regions.reduce((s, _r, i) => s + region(xs, i, a, b), 0);
    const from = 3000;
    const spanS = (cutAt - from) / 1000;
    const cutFrom = cutAt + 1000;
    const cutTo = restoredAt;
    const cutPerS = region("admitted", o.cutRegion, cutFrom, cutTo) / ((cutTo - cutFrom) / 1000);
    const afterFrom = restoredAt + 2000;
    return {
      limit: o.limit,
      globalRatio: all("admitted", from, cutAt) / (o.limit * spanS),
      regionPerS: o.regions.map((_r, i) => region("admitted", i, from, cutAt) / spanS),
      lastSharePerS,
      modeInCut,
      cutPerS,
      cutOverLastShare: lastSharePerS > 0 ? cutPerS / lastSharePerS : 0,
      cutMeasuredS: (cutTo - cutFrom) / 1000,
      afterRatio: all("admitted", afterFrom, endAt) / ((o.limit * (endAt - afterFrom)) / 1000),
      lightShare: o.regions.map((r, i) => {
        const g = index[i]![r.gateways.length - 1]!;
        return paced.sum("admitted", g, from, endAt) / Math.max(1, paced.sum("offered", g, from, endAt));
      }),
      lag: paced.lag(),
    };
  } finally {
    load?.stop();
    for (const gw of gateways.flat()) gw.close();
    await Promise.all(servers.map((s) => s.stop()));
    await Promise.all(proxies.map((p) => p.close()));
  }
}
