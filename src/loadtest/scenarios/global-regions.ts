import { createLimiter } from "../../client/create.js";
import type { GatewayLimiter } from "../../client/gateway-limiter.js";
import { encodeKey } from "../../config/key.js";
import { keyPoint } from "../../keyspace/hash.js";
import { Routing } from "../../keyspace/routing.js";
import { connect } from "../../protocol/rpc.js";
import type { CliOptions } from "../../testkit/cli.js";
import { globalLimitYaml, type LoopbackRegion, scenarioQRegions } from "../../testkit/global-loopback.js";
import { httpGet } from "../../testkit/http.js";
import { BEHIND_MS, lagVerdict, type PacedLag, PacedLoad } from "../../testkit/paced-load.js";
import { type ConnectProxy, startConnectProxy } from "../../testkit/tcp-proxy.js";
import { waitFor } from "../../testkit/wait.js";
import { type Stack, startStack } from "../stack.js";
import { round } from "./common.js";

/**
 * `shardlimit bench overload`, scenario `global` (issue 14, item 5 and scenario Q): a global limit
 * over three real regional clusters and a global one, on loopback. Each cluster has its own etcd
 * and two `shardlimit serve --etcd` members; the regions' members run with `--global-tier` (the
 * global members' addresses) and `--region`. The global members listen on 127.0.0.2 and each
 * region's members reach anything but 127.0.0.1 through the region's own HTTP CONNECT proxy
 * (`grpc_proxy`), which delays every chunk `delayMs` each way and can be cut: a link between a
 * region and the global tier, whichever global member a region's owner talks to; within a region
 * (its etcd, its members, its gateways) there is no delay.
 *
 * Two global keys of one 1000/s rule (`global/k=<a>`, `global/k=<b>`), chosen so that in every
 * cluster they have different owners: each regional member is the global tier's gateway for one
 * key and divides the region's share of it among the region's gateways. Gateways (the real
 * GatewayLimiter over gRPC, in this process) per region as scenario Q: 3, 2 and 1 heavy and one
 * light (10/s), 2000/s per key in 70/20/10, each gateway deciding both keys.
 *
 * Phases: warm-up; steady (measured); region A's link cut for `cutS`; restored (measured once A
 * is connected again); then region A's owner of key a SIGKILLed: the key moves to the other member
 * of region A, which becomes the region's gateway at the global tier for it.
 */

export interface GlobalRegionsOptions {
  limit?: number;
  delayMs?: number;
  warmS?: number;
  steadyS?: number;
  cutS?: number;
  afterS?: number;
  killS?: number;
  cli?: CliOptions["cli"];
  log?: (l: string) => void;
}

interface ShareSample {
  /** Ms since the traffic started. */
  t: number;
  region: number;
  server: number;
  key: number;
  share: number;
  mode: string;
  contactAgoS: number;
}

export interface GlobalRegionsResult {
  name: string;
  pass: boolean;
  /** Which bound failed, in words (empty when `pass`). */
  failures: string[];
  target: string;
  limit_per_s: number;
  delay_ms: number;
  keys: string[];
  /** Per key: global admitted / limit over the steady phase, and per second. */
  global_ratio: number[];
  global_ratio_per_s: number[][];
  /** Per key, per region: admitted per second in the steady phase, and its share (mean of /metrics). */
  region_admitted_per_s: number[][];
  region_share_per_s: number[][];
  /** Region A cut off, per key: its last share, what it admitted per second (from 1 s into the cut), the ratio, its mode. */
  cut: {
    last_share_per_s: number[];
    admitted_per_s: number[];
    over_last_share: number[];
    mode: string[];
    /** Global (all regions) admitted / limit during the cut, per key. */
    global_ratio: number[];
    /** Seconds from the link's restoring until region A was connected again on both keys. */
    reconnect_s: number;
  };
  /**
   * Per region: its members' warnings that a report to the global tier failed ("owner
   * unreachable"), by the end of the steady phase (the link was never cut by then).
   */
  link_failures_steady: number[];
  /** Per key: global admitted / limit from 2 s after region A reconnected until the kill. */
  global_ratio_after_cut: number[];
  /** Per key, per region: the light caller's admitted / offered, warm-up to the kill. */
  light_share: number[][];
  kill: {
    key: string;
    /** Region A's share of the key (mean of the 3 s before the kill) and what it admitted per second then. */
    share_before_per_s: number;
    admitted_before_per_s: number;
    /** Region A's admitted per second for the key, each second from the kill. */
    admitted_per_s: number[];
    /** Region A's share per second from the kill, as the surviving member's /metrics said (0: not its key yet). */
    share_per_s: number[];
    /** Seconds from the kill until the survivor reported a share for the key from the global tier. */
    moved_s: number;
    /** Region A admitted over the kill phase from `settle_s` after the kill / its share before. */
    settle_s: number;
    over_share_before: number;
    /** The whole kill phase (failover included) / its share before. */
    over_share_before_all: number;
    global_ratio: number;
    light_share: number;
  };
  /** Per key: global admitted per second over the whole run (warm-up, steady, cut, after, kill). */
  global_per_s: number[][];
  /**
   * Each second of the run: the generator's worst lateness, the worst event-loop delay of any
   * server, and per key and region the admitted units and the light caller's refusals, to tell
   * the machine's stalls from the code's drift.
   */
  /**
   * Seconds of the steady and after phases split by whether the machine kept up (generator ticks
   * and every server's event loop under 100 ms late) or stalled, with the global ratio and the
   * light callers' refusals in each: drift only in stalled seconds is the machine's.
   */
  calm: {
    calm_s: number;
    stalled_s: number;
    global_ratio_calm: number[];
    global_ratio_stalled: number[];
    light_refused_calm: number;
    light_refused_stalled: number;
  };
  timeline: {
    generator_late_ms: number[];
    server_loop_max_ms: number[];
    region_admitted: number[][][];
    light_refused: number[][][];
  };
  /** Region A's mode per key each second of the run (c connected, l last_share, f fallback, - none): the timeline. */
  region_a_modes: string[];
  generator_lag: PacedLag & { verdict: string };
  /** The worst event-loop delay any server reported (p99 of a scrape interval, and max), ms. */
  server_loop_p99_ms: number;
  server_loop_max_ms: number;
  /** CPU this process (traffic, gateways, proxies' threads, sampling) used, in cores, over the traffic. */
  bench_cpu_cores: number;
  wall_s: number;
}

const GLOBAL_HOST = "127.0.0.2";
const REGION_HOST = "127.0.0.1";
const SAMPLE_MS = 500;

/** A Prometheus exposition's samples by `name{labels}` (or `name`), parsed once. */
function metricValues(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    m.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return m;
}

/** Owner address of counter `key` in the cluster `address` belongs to. */
async function ownerOf(address: string, keys: readonly string[]): Promise<string[]> {
  const rpc = connect(address);
  try {
    const view = await rpc.getClusterView({ knownGeneration: 0 }, { deadlineMs: 2000 });
    const r = Routing.fromView(view, address);
    if (typeof r === "string") throw new Error(r);
    return keys.map((k) => r.ownerOf(keyPoint(k)));
  } finally {
    rpc.close();
  }
}

/**
 * Two values of `k` whose counter keys have different owners in every cluster: each member of
 * every cluster then owns one global key.
 */
async function pickKeys(stacks: readonly Stack[]): Promise<[string, string]> {
  const candidates = Array.from({ length: 64 }, (_, i) =>
    encodeKey("global", [{ key: "k", value: `v${i}` }]),
  );
  const owners = await Promise.all(stacks.map((s) => ownerOf(s.addresses()[0]!, candidates)));
  for (let a = 0; a < candidates.length; a++) {
    for (let b = a + 1; b < candidates.length; b++) {
      if (owners.every((o) => o[a] !== o[b])) return [candidates[a]!, candidates[b]!];
    }
  }
  throw new Error("no two keys with different owners in every cluster among 64 candidates");
}

export async function runGlobalRegions(opts: GlobalRegionsOptions = {}): Promise<GlobalRegionsResult> {
  const limit = opts.limit ?? 1000;
  const delayMs = opts.delayMs ?? 50;
  const warmS = opts.warmS ?? 6;
  const steadyS = opts.steadyS ?? 12;
  const cutS = opts.cutS ?? 10;
  const afterS = opts.afterS ?? 6;
  const killS = opts.killS ?? 14;
  const log = opts.log ?? (() => {});
  const regions: LoopbackRegion[] = scenarioQRegions();
  const yaml = globalLimitYaml(limit);
  const wallFrom = Date.now();

  const stacks: Stack[] = [];
  const proxies: ConnectProxy[] = [];
  const gateways: GatewayLimiter[][] = [];
  let load: PacedLoad | undefined;
  let sampler: ReturnType<typeof setInterval> | undefined;
  try {
    log(`global: starting the global cluster (etcd + 2 members on ${GLOBAL_HOST})`);
    const global = await startStack({
      servers: 2,
      config: yaml,
      grpcHost: GLOBAL_HOST,
      allOwners: true,
      ...(opts.cli ? { cli: opts.cli } : {}),
    });
    stacks.push(global);
    for (let i = 0; i < regions.length; i++) proxies.push(await startConnectProxy({ delayMs }));
    log(`global: starting ${regions.length} regional clusters (etcd + 2 members each)`);
    // One region at a time: 13 processes starting at once on a busy machine missed the 30 s
    // readiness wait.
    for (const [i, r] of regions.entries()) {
      stacks.push(
        await startStack({
          servers: 2,
          config: yaml,
          env: proxies[i]!.env(REGION_HOST),
          allOwners: true,
          ...(opts.cli ? { cli: opts.cli } : {}),
          extraArgs: [
            "--global-tier",
            global.addresses().join(","),
            "--region",
            r.name,
            "--global-regions",
            String(regions.length),
            "--global-fallback-after",
            String((cutS + 30) * 1000),
          ],
        }),
      );
    }
    const regional = stacks.slice(1);
    const keys = await pickKeys(stacks);
    log(`global: keys ${keys.join(", ")}`);
    // Region A's owner of key a: the member killed in the last phase.
    const [ownerA] = await ownerOf(regional[0]!.addresses()[0]!, [keys[0]]);
    const victim = regional[0]!.addresses().indexOf(ownerA!);
    const survivor = 1 - victim;

    for (const [i, r] of regions.entries()) {
      gateways.push(
        await Promise.all(
          r.gateways.map((_, g) =>
            createLimiter({ servers: regional[i]!.addresses(), clientId: `${r.name}-gw${g}` }),
          ),
        ),
      );
    }
    // Streams: key, region, gateway.
    const index: number[][][] = [];
    const streams: { ratePerS: number; decide: () => boolean }[] = [];
    for (const key of keys) {
      index.push(
        regions.map((r, i) =>
          r.gateways.map((rate, g) => {
            streams.push({ ratePerS: rate, decide: () => gateways[i]![g]!.decide(key) });
            return streams.length - 1;
          }),
        ),
      );
    }
    const total = warmS + steadyS + cutS + afterS + killS;
    load = new PacedLoad(streams, { seconds: total + 30 });
    const paced = load;

    // The regions' shares and modes, and every server's event-loop delay, from /metrics.
    const samples: ShareSample[] = [];
    const dead = new Set<string>();
    let loopP99 = 0;
    let loopMax = 0;
    /** The worst event-loop delay any server reported in each scrape, by when (ms since the start). */
    const loops: { t: number; ms: number }[] = [];
    /**
     * Scrapes the servers of the clusters `only` names (all by default) once: each exposition is
     * parsed once, as the scrapes run on the generator's event loop (polled every 50 ms with
     * every gauge looked up in the whole text, they stalled the generator 200-400 ms at the cut
     * and the restore, the very moments measured).
     */
    const sample = async (only?: number) => {
      const t = paced.elapsed();
      await Promise.all(
        stacks.flatMap((stack, c) =>
          only !== undefined && c !== only
            ? []
            : stack.servers.map(async (s, server) => {
                if (dead.has(s.address)) return;
                const m = metricValues(
                  await httpGet(`http://127.0.0.1:${s.httpPort}/metrics`).then(
                    (r) => r.body,
                    () => "",
                  ),
                );
                loopP99 = Math.max(loopP99, (m.get("nodejs_eventloop_lag_p99_seconds") ?? 0) * 1000);
                const max = (m.get("nodejs_eventloop_lag_max_seconds") ?? 0) * 1000;
                loopMax = Math.max(loopMax, max);
                loops.push({ t, ms: max });
                if (c === 0) return;
                keys.forEach((key, k) => {
                  const share = m.get(`shardlimit_global_share_per_second{key="${key}"}`);
                  if (share === undefined) return;
                  const mode =
                    ["connected", "last_share", "fallback"].find(
                      (x) => m.get(`shardlimit_global_mode{key="${key}",mode="${x}"}`) === 1,
                    ) ?? "";
                  const contactAgoS =
                    m.get(`shardlimit_global_last_contact_seconds{key="${key}"}`) ?? Number.POSITIVE_INFINITY;
                  samples.push({ t, region: c - 1, server, key: k, share, mode, contactAgoS });
                });
              }),
        ),
      );
    };
    /** A region's share of key k at the latest sample at or before `t`: the member with the freshest contact. */
    const shareAt = (region: number, k: number, from: number, to: number) => {
      const xs = samples.filter((s) => s.region === region && s.key === k && s.t >= from && s.t < to);
      const byT = new Map<number, ShareSample>();
      for (const s of xs) {
        const o = byT.get(s.t);
        if (o === undefined || s.contactAgoS < o.contactAgoS) byT.set(s.t, s);
      }
      return [...byT.values()];
    };
    const meanShare = (region: number, k: number, from: number, to: number) => {
      const xs = shareAt(region, k, from, to);
      return xs.length === 0 ? 0 : xs.reduce((n, s) => n + s.share, 0) / xs.length;
    };
    /** Region `region`'s latest sample of key k (from `server` only, if given). */
    const pick = (region: number, k: number, server?: number) => {
      const xs = samples.filter(
        (s) => s.region === region && s.key === k && (server === undefined || s.server === server),
      );
      const t = xs.at(-1)?.t;
      return xs.filter((s) => s.t === t).sort((a, b) => a.contactAgoS - b.contactAgoS)[0];
    };
    const sleepUntil = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms - paced.elapsed())));

    log(
      `global: traffic on (${warmS} s warm-up, ${steadyS} s steady, ${cutS} s cut, ${afterS} s after, ${killS} s kill)`,
    );
    paced.start();
    const cpuFrom = process.cpuUsage();
    sampler = setInterval(() => void sample(), SAMPLE_MS);
    const steadyFrom = warmS * 1000;
    await sleepUntil(steadyFrom + steadyS * 1000);

    /** Each region's "global tier: owner unreachable" warnings so far (a report to the global tier failed). */
    const unreachable = () =>
      regional.map((st) =>
        st.servers.reduce(
          (n, sv) =>
            n + (sv.child?.lines.filter((l) => l.includes("global tier: owner unreachable")).length ?? 0),
          0,
        ),
      );
    const unreachableSteady = unreachable();
    // Region A cut off from the global tier.
    proxies[0]!.cut();
    const cutAt = paced.elapsed();
    log("global: region A cut off");
    const lastShare: number[] = [];
    for (let k = 0; k < keys.length; k++) {
      let s: ShareSample | undefined;
      await waitFor(
        `region A to keep to its last share of ${keys[k]}`,
        async () => {
          await sample(1);
          s = pick(0, k);
          return s?.mode === "last_share";
        },
        5000,
        100,
      );
      lastShare.push(s!.share);
    }
    await sleepUntil(cutAt + cutS * 1000 - 200);
    const modeInCut: string[] = [];
    await sample(1);
    for (let k = 0; k < keys.length; k++) modeInCut.push(pick(0, k)?.mode ?? "");
    proxies[0]!.restore();
    const restoredAt = paced.elapsed();
    log("global: region A's link restored");
    await waitFor(
      "region A to be connected to the global tier again",
      async () => {
        await sample(1);
        return keys.every((_, k) => pick(0, k)?.mode === "connected");
      },
      20_000,
      200,
    ).catch(() => log("global: region A not connected again 20 s after the link came back"));
    const reconnectedAt = paced.elapsed();
    await sleepUntil(reconnectedAt + afterS * 1000);

    // Region A's owner of key a killed.
    const killAt = paced.elapsed();
    const victimServer = regional[0]!.servers[victim]!;
    dead.add(victimServer.address);
    await victimServer.stop("SIGKILL");
    log(`global: region A's owner of ${keys[0]} (${victimServer.id}) killed`);
    let movedAt = Number.NaN;
    await waitFor(
      "region A's other member to hold a share of the key from the global tier",
      async () => {
        await sample(1);
        const s = pick(0, 0, survivor);
        if (s?.mode === "connected" && Number.isNaN(movedAt)) movedAt = paced.elapsed();
        return s?.mode === "connected";
      },
      killS * 1000,
      200,
    ).catch(() => {});
    await sleepUntil(killAt + killS * 1000);
    clearInterval(sampler);
    sampler = undefined;
    paced.stop();
    const endAt = paced.elapsed();
    const cpu = process.cpuUsage(cpuFrom);

    // Figures.
    const regionSum = (series: "offered" | "admitted", k: number, r: number, a: number, b: number) =>
      index[k]![r]!.reduce((n, i) => n + paced.sum(series, i, a, b), 0);
    const allSum = (k: number, a: number, b: number) =>
      regions.reduce((n, _r, r) => n + regionSum("admitted", k, r, a, b), 0);
    const ratio = (k: number, a: number, b: number) => allSum(k, a, b) / ((limit * (b - a)) / 1000);
    const steadyTo = cutAt;
    const steadySpan = (steadyTo - steadyFrom) / 1000;
    const cutFrom = cutAt + 1000;
    const afterFrom = reconnectedAt + 2000;
    const lightShare = (k: number, r: number, a: number, b: number) => {
      const g = index[k]![r]!.at(-1)!;
      return paced.sum("admitted", g, a, b) / Math.max(1, paced.sum("offered", g, a, b));
    };
    const killSeconds = Math.floor((endAt - killAt) / 1000);
    const settleS = 6;
    const shareBefore = meanShare(0, 0, killAt - 3000, killAt);
    const admittedBefore = regionSum("admitted", 0, 0, killAt - 3000, killAt) / 3;
    const cutPerS = keys.map(
      (_, k) => regionSum("admitted", k, 0, cutFrom, restoredAt) / ((restoredAt - cutFrom) / 1000),
    );
    const lag = paced.lag();
    const loopAt = (sec: number) =>
      loops.filter((x) => Math.floor(x.t / 1000) === sec).reduce((m, x) => Math.max(m, x.ms), 0);
    const calmSplit = (): GlobalRegionsResult["calm"] => {
      const secs = [
        ...Array.from({ length: Math.floor(steadySpan) }, (_, i) => Math.ceil(steadyFrom / 1000) + i),
        ...Array.from(
          { length: Math.max(0, Math.floor((killAt - afterFrom) / 1000)) },
          (_, i) => Math.ceil(afterFrom / 1000) + i,
        ),
      ];
      const isCalm = (sec: number) => (lag.perSecondMaxMs[sec] ?? 0) <= BEHIND_MS && loopAt(sec) <= BEHIND_MS;
      const calm = secs.filter(isCalm);
      const stalled = secs.filter((x) => !isCalm(x));
      const over = (xs: number[], k: number) =>
        xs.length === 0
          ? 0
          : round(
              xs.reduce((n, sec) => n + allSum(k, sec * 1000, (sec + 1) * 1000), 0) / (limit * xs.length),
              4,
            );
      const refused = (xs: number[]) =>
        xs.reduce(
          (n, sec) =>
            n +
            keys.reduce(
              (m, _k, k) =>
                m +
                regions.reduce((q, _r, r) => {
                  const g = index[k]![r]!.at(-1)!;
                  return (
                    q +
                    paced.sum("offered", g, sec * 1000, (sec + 1) * 1000) -
                    paced.sum("admitted", g, sec * 1000, (sec + 1) * 1000)
                  );
                }, 0),
              0,
            ),
          0,
        );
      return {
        calm_s: calm.length,
        stalled_s: stalled.length,
        global_ratio_calm: keys.map((_, k) => over(calm, k)),
        global_ratio_stalled: keys.map((_, k) => over(stalled, k)),
        light_refused_calm: refused(calm),
        light_refused_stalled: refused(stalled),
      };
    };
    const r: GlobalRegionsResult = {
      name: "global",
      pass: false,
      failures: [],
      target:
        "global admitted / limit in [0.97, 1.03] per key; region A cut off: admitted / last share in [0.97, 1.03], mode last_share; " +
        "light callers >= 0.99 of their demand; after the kill, region A from 5 s on within [0.9, 1.1] of its share before",
      limit_per_s: limit,
      delay_ms: delayMs,
      keys,
      global_ratio: keys.map((_, k) => round(ratio(k, steadyFrom, steadyTo), 4)),
      global_ratio_per_s: keys.map((_, k) =>
        Array.from({ length: Math.floor(steadySpan) }, (_x, s) =>
          round(ratio(k, steadyFrom + s * 1000, steadyFrom + (s + 1) * 1000), 3),
        ),
      ),
      region_admitted_per_s: keys.map((_, k) =>
        regions.map((_r, r) => Math.round(regionSum("admitted", k, r, steadyFrom, steadyTo) / steadySpan)),
      ),
      region_share_per_s: keys.map((_, k) =>
        regions.map((_r, r) => Math.round(meanShare(r, k, steadyFrom, steadyTo))),
      ),
      cut: {
        last_share_per_s: lastShare.map((x) => round(x, 1)),
        admitted_per_s: cutPerS.map((x) => round(x, 1)),
        over_last_share: cutPerS.map((x, k) => round(lastShare[k]! > 0 ? x / lastShare[k]! : 0, 4)),
        mode: modeInCut,
        global_ratio: keys.map((_, k) => round(ratio(k, cutFrom, restoredAt), 4)),
        reconnect_s: round((reconnectedAt - restoredAt) / 1000, 2),
      },
      link_failures_steady: unreachableSteady,
      global_ratio_after_cut: keys.map((_, k) => round(ratio(k, afterFrom, killAt), 4)),
      light_share: keys.map((_, k) => regions.map((_r, r) => round(lightShare(k, r, steadyFrom, killAt), 4))),
      kill: {
        key: keys[0],
        share_before_per_s: round(shareBefore, 1),
        admitted_before_per_s: round(admittedBefore, 1),
        admitted_per_s: paced.perSecond("admitted", index[0]![0]!, killAt, killSeconds),
        share_per_s: Array.from({ length: killSeconds }, (_, s) =>
          Math.round(
            samples
              .filter((x) => x.region === 0 && x.key === 0 && x.server === survivor)
              .filter((x) => x.t >= killAt + s * 1000 && x.t < killAt + (s + 1) * 1000)
              .reduce((m, x) => Math.max(m, x.share), 0),
          ),
        ),
        moved_s: round((movedAt - killAt) / 1000, 2),
        settle_s: settleS,
        over_share_before: round(
          regionSum("admitted", 0, 0, killAt + settleS * 1000, endAt) /
            ((shareBefore * (endAt - killAt - settleS * 1000)) / 1000),
          4,
        ),
        over_share_before_all: round(
          regionSum("admitted", 0, 0, killAt, endAt) / ((shareBefore * (endAt - killAt)) / 1000),
          4,
        ),
        global_ratio: round(ratio(0, killAt, endAt), 4),
        light_share: round(lightShare(0, 0, killAt, endAt), 4),
      },
      global_per_s: keys.map((_, k) =>
        paced.perSecond("admitted", index[k]!.flat(), 0, Math.floor(endAt / 1000)),
      ),
      calm: calmSplit(),
      timeline: {
        generator_late_ms: lag.perSecondMaxMs,
        server_loop_max_ms: Array.from({ length: Math.ceil(endAt / 1000) }, (_, sec) =>
          Math.round(loopAt(sec)),
        ),
        region_admitted: keys.map((_, k) =>
          regions.map((_r, r) => paced.perSecond("admitted", index[k]![r]!, 0, Math.floor(endAt / 1000))),
        ),
        light_refused: keys.map((_, k) =>
          regions.map((_r, r) => {
            const g = [index[k]![r]!.at(-1)!];
            const off = paced.perSecond("offered", g, 0, Math.floor(endAt / 1000));
            const adm = paced.perSecond("admitted", g, 0, Math.floor(endAt / 1000));
            return off.map((x, i) => x - adm[i]!);
          }),
        ),
      },
      region_a_modes: keys.map((_, k) =>
        Array.from({ length: Math.ceil(endAt / 1000) }, (_x, sec) => {
          const xs = shareAt(0, k, sec * 1000, (sec + 1) * 1000);
          return xs.length === 0 ? "-" : xs.at(-1)!.mode.charAt(0);
        }).join(""),
      ),
      generator_lag: { ...lag, verdict: lagVerdict(lag) },
      server_loop_p99_ms: round(loopP99, 1),
      server_loop_max_ms: round(loopMax, 1),
      bench_cpu_cores: round((cpu.user + cpu.system) / 1000 / endAt, 3),
      wall_s: 0,
    };
    const f = r.failures;
    r.global_ratio.forEach((x, k) => {
      if (!(x >= 0.97 && x <= 1.03)) f.push(`global ratio of ${keys[k]} ${x} outside [0.97, 1.03]`);
    });
    r.cut.over_last_share.forEach((x, k) => {
      if (!(x >= 0.97 && x <= 1.03))
        f.push(`cut region on ${keys[k]}: ${x} of its last share, outside [0.97, 1.03]`);
    });
    r.cut.mode.forEach((m, k) => {
      if (m !== "last_share") f.push(`cut region on ${keys[k]} in mode ${m}, not last_share`);
    });
    r.light_share.forEach((xs, k) => {
      xs.forEach((x, i) => {
        if (x < 0.99) f.push(`light caller of ${regions[i]!.name} on ${keys[k]}: ${x} of its demand`);
      });
    });
    if (!(r.kill.over_share_before >= 0.9 && r.kill.over_share_before <= 1.1)) {
      f.push(
        `after the kill region A admitted ${r.kill.over_share_before} of its share before, outside [0.9, 1.1]`,
      );
    }
    r.pass = f.length === 0;
    r.wall_s = round((Date.now() - wallFrom) / 1000, 1);
    return r;
  } finally {
    if (sampler !== undefined) clearInterval(sampler);
    load?.stop();
    for (const gw of gateways.flat()) gw.close();
    await Promise.all(stacks.map((s) => s.stop()));
    await Promise.all(proxies.map((p) => p.close()));
  }
}
