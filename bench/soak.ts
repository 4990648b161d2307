/**
 * Soak (issue 11): a real etcd and three real `shardlimit serve` processes (the built CLI) under
 * steady, moderate, mixed load for --minutes, with the churn that could leak repeated every cycle
 * (a minute): a config reload (the file rewritten; the servers watch it), a gateway reconnect (one
 * GatewayLimiter closed, a new one with a new client id), a sync client reconnect, and a rolling
 * restart of s3 (SIGTERM: drain and hand off, then start again on the same ports). Every 10 s each
 * server's /metrics (prom-client default metrics) and this process's own are sampled; at the end a
 * table per process compares the start window (right after warm-up) with the end window:
 *
 *   memory: the MINIMUM over each window of heap used (the floor between collections, so garbage
 *     waiting for a GC does not count as growth), of the live heap (shardlimit_heap_live_bytes:
 *     what survived the latest major GC) and of RSS outside V8's heap (RSS - heap total: buffers,
 *     code, grpc's native side; judged from the middle of the run to the end, since it reaches its
 *     high-water mark only after minutes). RSS itself and heap total are reported, not judged: V8 sizes its
 *     heap to the garbage made between major GCs, so they grow with the load's churn, not a leak.
 *   handles and event-loop lag p99: the MEDIAN over each window (lag p99 is per 10 s: prom-client
 *     resets it on each scrape).
 *
 * Not flat (exit 1): live heap +20% and +20 MB (heap used, when no major GC was reported), RSS -
 * heap total +30% and +30 MB from mid-run, handles +10, or end lag p99 over 3x the start and over 20 ms. s1 and
 * s2 live the whole run and are judged on all of it; s3 is restarted every cycle, so only its lag
 * is judged (its memory is a new process's each minute).
 *
 * Load (rates per second, all on one shared 2-CPU machine, so modest): 2000 batched decide() over
 * 3 in-process gateways on a churning tenant key set (3000 live tenants, 5 new ones a second, the
 * oldest dropping out, so counters are made and expire on the servers and in the gateways), 200
 * sync Check (round robin over the servers in rotation, forwarded to owners) on churning user and
 * route keys, 30 Acquire/Release RPC pairs (sent to the key's owner as of the cluster view, read
 * every 2 s and on NOT_OWNER) and 100 gateway acquire/release pairs. Every error a client sees is
 * counted by code.
 *
 *   npm run soak                     (builds, then: tsx bench/soak.ts)
 *
 * Options: --minutes 10  --json bench/out/soak.json  --decidePerS 2000  --checkPerS 200
 *          --acquirePerS 30  --gatewayAcquirePerS 100
 */

import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import client from "prom-client";
import { createLimiter } from "../src/client/create.js";
import type { GatewayLimiter } from "../src/client/gateway-limiter.js";
import { seededRandom } from "../src/core/random.js";
import { keyPoint } from "../src/keyspace/hash.js";
import { Routing } from "../src/keyspace/routing.js";
import { errorName } from "../src/protocol/item-errors.js";
import { connect, type RateLimiterRpc } from "../src/protocol/rpc.js";
import { registerLiveHeap } from "../src/server/metrics.js";
import { ensureBuilt, killAllCli } from "../src/testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../src/testkit/serve.js";
import { waitFor } from "../src/testkit/wait.js";
import { machine, parseArgs, printTable } from "./lib/common.js";
import {
  type Figures,
  figures,
  judge,
  mb,
  msOf,
  type Sample,
  sampleFrom,
  THRESHOLDS,
  type Verdict,
} from "./lib/soak-report.js";

const opts = parseArgs({
  minutes: 10,
  json: "bench/out/soak.json",
  decidePerS: 2000,
  checkPerS: 200,
  acquirePerS: 30,
  gatewayAcquirePerS: 100,
});

const TOTAL_S = opts.minutes * 60;
const SAMPLE_S = 10;
const WARMUP_S = Math.min(60, Math.round(TOTAL_S * 0.15));
/** Length of the start and end windows compared. */
const WINDOW_S = Math.min(120, Math.floor((TOTAL_S - WARMUP_S) / 3));
const CYCLE_S = Math.min(60, Math.floor(TOTAL_S / 4));
const TENANTS_LIVE = 3000;
const TENANTS_NEW_PER_S = 5;
const USERS_LIVE = 5000;
const USERS_NEW_PER_S = 10;
const GATEWAYS = 3;
const RESTARTED = "s3";
const MAX_IN_FLIGHT = 200;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function configYaml(version: number): string {
  const odd = version % 2;
  return `# soak config, version ${version}
domain: soak
descriptors:
  - key: tenant
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: ${50 + 10 * odd}, burst: 100 }
  - key: user
    rate_limit: { window: 10s, requests_per_unit: ${5 + odd} }
  - key: route
    rate_limit: { algorithm: sliding_window, unit: minute, requests_per_unit: ${10 + odd} }
  - key: conc
    rate_limit: { algorithm: concurrency, requests_per_unit: 3, lease_timeout: 10s }
  - key: gconc
    rate_limit: { algorithm: concurrency, requests_per_unit: ${20 + odd}, lease_timeout: 10s }
`;
}

// ---- what clients saw ---------------------------------------------------------------------------

const decisions = new Map<string, number>();
const errors = new Map<string, number>();
const bump = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);
const rpcError = (api: string, err: unknown) => {
  const code = (err as { code?: number }).code;
  bump(errors, `${api} grpc ${code !== undefined ? (grpc.status[code] ?? code) : (err as Error).message}`);
};
/** Warnings and errors the servers logged, by message. */
const serverLogs = new Map<string, number>();
const events: { t: number; what: string; ms?: number; detail?: string }[] = [];

// ---- cleanup, whatever happens ------------------------------------------------------------------

let etcd: EtcdProcess | undefined;
const servers: ServerProcess[] = [];
let cleaned = false;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  await Promise.all(servers.map((s) => s.stop("SIGKILL").catch(() => {})));
  await killAllCli();
  await etcd?.destroy().catch(() => {});
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.log(`\n${sig}: stopping etcd and the servers`);
    cleanup().finally(() => process.exit(130));
  });
}

// ---- the cluster --------------------------------------------------------------------------------

const m = machine();
console.log(`soak: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}, load ${m.loadAvg1m}`);
console.log(
  `${opts.minutes} min: warm-up ${WARMUP_S} s, windows of ${WINDOW_S} s, churn every ${CYCLE_S} s; load/s: ${opts.decidePerS} decide, ${opts.checkPerS} Check, ${opts.acquirePerS} Acquire, ${opts.gatewayAcquirePerS} gateway acquire\n`,
);

let exitCode = 1;
try {
  exitCode = await soak();
} catch (err) {
  console.error("soak failed:", err);
  exitCode = 2;
} finally {
  await cleanup();
}
process.exit(exitCode);

async function soak(): Promise<number> {
  ensureBuilt();
  etcd = await startEtcd();
  let configVersion = 0;
  const configPath = writeConfig(configYaml(configVersion));
  const prefix = `/soak${Date.now().toString(36)}/`;
  const incarnation = new Map<string, number>();
  for (const id of ["s1", "s2", "s3"]) {
    incarnation.set(id, 1);
    servers.push(
      await serverProcess({
        id,
        configPath,
        etcdUrl: etcd.url,
        prefix,
        cli: "built",
        leaseTtlSeconds: 2,
        logLevel: "warn",
        ready: "spawned",
        onLine(line) {
          try {
            const l = JSON.parse(line) as { level?: number; msg?: string };
            if ((l.level ?? 0) >= 40)
              bump(serverLogs, `${id} ${l.level === 40 ? "warn" : "error"}: ${l.msg}`);
          } catch {
            bump(serverLogs, `${id} non-JSON: ${line.slice(0, 80)}`);
          }
        },
      }),
    );
  }
  const byId = (id: string) => servers.find((s) => s.id === id)!;
  await Promise.all(servers.map((s) => s.start()));
  await waitAllReady(servers, 30_000);
  const addresses = servers.map((s) => s.address);
  const rpcOptions = { "grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 1000 };
  const rpcs = new Map<string, RateLimiterRpc>(servers.map((s) => [s.id, connect(s.address, rpcOptions)]));
  const settled = async (what: string) => {
    await waitFor(
      what,
      async () => {
        const views = await Promise.all(
          servers.map((s) =>
            rpcs
              .get(s.id)!
              .getClusterView({}, { deadlineMs: 2000 })
              .catch(() => undefined),
          ),
        );
        return views.every((v) => v?.members.length === 3 && v.generation === views[0]!.generation);
      },
      30_000,
      100,
    );
  };
  await settled("all three servers on one generation with three members");

  // Servers taking sync traffic: one leaves on SIGTERM (as an endpoint does when not ready).
  const inRotation = new Set(servers.map((s) => s.id));
  let routing: Routing | undefined;
  let refreshing: Promise<void> | undefined;
  /** On NOT_OWNER, as a client would: the assignment moved since the last refresh. */
  const notOwner = (code: number) => {
    if (errorName(code) === "NOT_OWNER" && refreshing === undefined)
      refreshing = refreshRouting().finally(() => {
        refreshing = undefined;
      });
  };
  const refreshRouting = async () => {
    for (const id of inRotation) {
      const v = await rpcs
        .get(id)!
        .getClusterView({}, { deadlineMs: 2000 })
        .catch(() => undefined);
      if (!v) continue;
      const r = Routing.fromView(v, byId(id).address);
      if (typeof r !== "string") routing = r;
      return;
    }
  };
  await refreshRouting();

  // ---- gateways --------------------------------------------------------------------------------
  let gatewaysMade = 0;
  const retired = { reportsFailed: 0, reportsTooOld: 0, unitsAdmitted: 0, unitsRejected: 0 };
  const newGateway = () =>
    createLimiter({ servers: addresses, clientId: `soak-gw-${gatewaysMade++}`, connectTimeoutMs: 20_000 });
  const gateways: GatewayLimiter[] = await Promise.all(Array.from({ length: GATEWAYS }, () => newGateway()));
  const retire = (g: GatewayLimiter) => {
    g.flush();
    const s = g.stats();
    retired.reportsFailed += s.reportsFailed;
    retired.reportsTooOld += s.reportsTooOld;
    retired.unitsAdmitted += s.unitsAdmitted;
    retired.unitsRejected += s.unitsRejected;
    // The flushed reports get a moment on the wire before the channels close.
    setTimeout(() => g.close(), 200);
  };

  // ---- this process's own metrics, read the same way as the servers' ---------------------------
  const own = new client.Registry();
  client.collectDefaultMetrics({ register: own, eventLoopMonitoringPrecision: 10 });
  registerLiveHeap(own);
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();

  // ---- the load --------------------------------------------------------------------------------
  const rnd = seededRandom(11);
  const t0 = performance.now();
  const elapsedS = () => (performance.now() - t0) / 1000;
  let running = true;
  let inFlight = 0;
  let skipped = 0;
  const pending = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    inFlight++;
    const q = p.finally(() => {
      inFlight--;
      pending.delete(q);
    });
    pending.add(q);
  };
  const tenantKey = (now: number) => {
    const base = Math.floor(now * TENANTS_NEW_PER_S);
    // Skewed: the newest tenants are the busiest, a long tail is rarely seen.
    return `soak/tenant=t${base + Math.floor(TENANTS_LIVE * rnd() ** 2)}`;
  };
  const userKey = (now: number) =>
    rnd() < 0.8
      ? `soak/user=u${Math.floor(now * USERS_NEW_PER_S) + Math.floor(USERS_LIVE * rnd())}`
      : `soak/route=r${Math.floor(200 * rnd())}`;
  let rr = 0;
  const pickRpc = (): RateLimiterRpc | undefined => {
    const ids = [...inRotation];
    if (ids.length === 0) return undefined;
    return rpcs.get(ids[rr++ % ids.length]!);
  };

  const doDecide = (now: number) => {
    const g = gateways[Math.floor(rnd() * gateways.length)]!;
    try {
      bump(decisions, g.decide(tenantKey(now)) ? "decide admitted" : "decide rejected");
    } catch (err) {
      bump(errors, `decide ${(err as Error).name}: ${(err as Error).message.slice(0, 60)}`);
    }
  };
  const doCheck = (now: number) => {
    const rpc = pickRpc();
    if (!rpc || inFlight >= MAX_IN_FLIGHT) {
      skipped++;
      return;
    }
    track(
      rpc.check({ items: [{ key: userKey(now), cost: 1 }] }, { deadlineMs: 3000 }).then(
        (r) => {
          const item = r.results[0];
          if (item?.error?.code) bump(errors, `check ${errorName(item.error.code)}`);
          else bump(decisions, item?.allowed ? "check allowed" : "check over limit");
        },
        (err) => rpcError("check", err),
      ),
    );
  };
  let leaseSeq = 0;
  const doAcquire = () => {
    if (inFlight >= MAX_IN_FLIGHT) {
      skipped++;
      return;
    }
    const key = `soak/conc=c${Math.floor(100 * rnd())}`;
    const owner = routing?.ownerOf(keyPoint(key));
    const id = servers.find((s) => s.address === owner)?.id;
    const rpc = id !== undefined && inRotation.has(id) ? rpcs.get(id) : pickRpc();
    if (!rpc) {
      skipped++;
      return;
    }
    const leaseId = `l${leaseSeq++}`;
    const holdMs = 20 + Math.floor(300 * rnd());
    track(
      rpc.acquire({ key, leaseId, amount: 1, timeoutMs: 10_000 }, { deadlineMs: 3000 }).then(
        async (r) => {
          if (r.error?.code) {
            notOwner(r.error.code);
            return bump(errors, `acquire ${errorName(r.error.code)}`);
          }
          bump(decisions, r.allowed ? "acquire allowed" : "acquire rejected");
          if (!r.allowed) return;
          await sleep(holdMs);
          // Released through the owner as of now (it may have moved while the lease was held).
          const now = routing?.ownerOf(keyPoint(key));
          const rid = servers.find((s) => s.address === now)?.id;
          const rrpc = rid !== undefined && inRotation.has(rid) ? rpcs.get(rid) : pickRpc();
          if (!rrpc) return bump(errors, "release no server in rotation");
          const rel = await rrpc.release({ key, leaseId }, { deadlineMs: 3000 }).catch((err) => {
            rpcError("release", err);
            return undefined;
          });
          if (rel?.error?.code) {
            notOwner(rel.error.code);
            bump(errors, `release ${errorName(rel.error.code)}`);
          } else if (rel) bump(decisions, rel.released ? "release released" : "release not held");
        },
        (err) => rpcError("acquire", err),
      ),
    );
  };
  const doGatewayAcquire = () => {
    const g = gateways[Math.floor(rnd() * gateways.length)]!;
    const key = `soak/gconc=g${Math.floor(50 * rnd())}`;
    try {
      const ok = g.acquire(key);
      bump(decisions, ok ? "gateway acquire allowed" : "gateway acquire rejected");
      if (ok) track(sleep(20 + Math.floor(200 * rnd())).then(() => g.release(key)));
    } catch (err) {
      bump(errors, `gateway acquire ${(err as Error).name}: ${(err as Error).message.slice(0, 60)}`);
    }
  };

  const done = { decide: 0, check: 0, acquire: 0, gatewayAcquire: 0 };
  const loadLoop = (async () => {
    while (running) {
      const now = elapsedS();
      for (; done.decide < now * opts.decidePerS; done.decide++) doDecide(now);
      for (; done.check < now * opts.checkPerS; done.check++) doCheck(now);
      for (; done.acquire < now * opts.acquirePerS; done.acquire++) doAcquire();
      for (; done.gatewayAcquire < now * opts.gatewayAcquirePerS; done.gatewayAcquire++) doGatewayAcquire();
      await sleep(10);
    }
  })();
  const routingTimer = setInterval(() => void refreshRouting(), 2000);

  // ---- sampling --------------------------------------------------------------------------------
  const samples = new Map<string, Sample[]>([
    ...servers.map((s) => [s.id, []] as [string, Sample[]]),
    ["soak", []],
  ]);
  const reloads = new Map<string, string>();
  const missed = new Map<string, number>();
  const sampleAll = async () => {
    const t = Math.round(elapsedS());
    await Promise.all(
      servers.map(async (s) => {
        try {
          const res = await fetch(`http://127.0.0.1:${s.httpPort}/metrics`, {
            signal: AbortSignal.timeout(3000),
          });
          const text = await res.text();
          samples.get(s.id)!.push(sampleFrom(text, t, incarnation.get(s.id)!));
          const ok = /shardlimit_config_reloads_total\{result="ok"\} (\d+)/.exec(text)?.[1] ?? "0";
          const bad = /shardlimit_config_reloads_total\{result="error"\} (\d+)/.exec(text)?.[1] ?? "0";
          reloads.set(s.id, `${ok} ok, ${bad} refused (this run of the process)`);
        } catch {
          bump(missed, s.id);
        }
        // serverProcess keeps every stdout line of the built CLI (tests index into them); the soak
        // reads them as they come (onLine), so it drops them rather than hold them for an hour.
        if (s.child) s.child.lines.length = 0;
      }),
    );
    const ownSample = sampleFrom(await own.metrics(), t, 1);
    // prom-client's own lag histogram resets on each read too; this one is the same measure.
    ownSample.lagP99Seconds = loopDelay.percentile(99) / 1e9;
    loopDelay.reset();
    samples.get("soak")!.push(ownSample);
    const s1 = samples.get("s1")!.at(-1);
    console.log(
      `[${String(t).padStart(4)} s] decisions ${[...decisions.values()].reduce((a, b) => a + b, 0)}, errors ${[...errors.values()].reduce((a, b) => a + b, 0)}, in flight ${inFlight}` +
        (s1
          ? `; s1 heap ${mb(s1.heapUsedBytes)} (live ${mb(s1.liveHeapBytes)}), handles ${s1.handles}, counters ${s1.counters}`
          : "") +
        `; soak heap ${mb(ownSample.heapUsedBytes)}`,
    );
  };

  // ---- churn -----------------------------------------------------------------------------------
  let restarting: Promise<void> | undefined;
  const rollingRestart = async () => {
    const s = byId(RESTARTED);
    const at = elapsedS();
    inRotation.delete(s.id);
    const tStop = performance.now();
    s.child!.child.kill("SIGTERM");
    const exit = await Promise.race([s.child!.exited, sleep(30_000).then(() => undefined)]);
    if (exit === undefined) {
      await s.stop("SIGKILL");
      events.push({ t: at, what: `${s.id} did not exit within 30 s of SIGTERM: killed` });
    }
    const stopMs = performance.now() - tStop;
    const tStart = performance.now();
    await s.start();
    incarnation.set(s.id, incarnation.get(s.id)! + 1);
    await waitAllReady([s], 30_000);
    await settled("three members on one generation after the restart");
    inRotation.add(s.id);
    events.push({
      t: Math.round(at),
      what: `rolling restart of ${s.id}`,
      ms: Math.round(performance.now() - tStop),
      detail: `drain and exit ${Math.round(stopMs)} ms (${exit ? `code ${exit.code}, signal ${exit.signal}` : "killed"}), start to settled ${Math.round(performance.now() - tStart)} ms`,
    });
  };
  const churn = async (phase: number) => {
    const t = Math.round(elapsedS());
    if (phase === 0) {
      configVersion++;
      writeConfig(configYaml(configVersion), path.dirname(configPath));
      events.push({ t, what: `config reload (version ${configVersion})` });
    } else if (phase === 1) {
      const i = configVersion % GATEWAYS;
      const old = gateways[i]!;
      const t1 = performance.now();
      gateways[i] = await newGateway();
      retire(old);
      events.push({ t, what: `gateway reconnect (slot ${i})`, ms: Math.round(performance.now() - t1) });
    } else if (phase === 2) {
      const id = servers[configVersion % servers.length]!.id;
      const old = rpcs.get(id)!;
      rpcs.set(id, connect(byId(id).address, rpcOptions));
      setTimeout(() => old.close(), 3500); // calls in flight on it finish first
      events.push({ t, what: `sync client reconnect (${id})` });
    } else if (phase === 3 && restarting === undefined) {
      restarting = rollingRestart()
        .catch((err: Error) => {
          events.push({ t, what: `rolling restart failed: ${err.message}` });
          inRotation.add(RESTARTED);
        })
        .finally(() => {
          restarting = undefined;
        });
    }
  };

  // ---- the run ---------------------------------------------------------------------------------
  const schedule: { t: number; run: () => Promise<unknown> | unknown }[] = [];
  for (let t = SAMPLE_S; t <= TOTAL_S; t += SAMPLE_S) schedule.push({ t, run: sampleAll });
  for (let c = WARMUP_S + CYCLE_S / 2; c < TOTAL_S - 10; c += CYCLE_S)
    for (let phase = 0; phase < 4; phase++) {
      const t = c + phase * 0.15 * CYCLE_S;
      if (t < TOTAL_S - 5) schedule.push({ t, run: () => churn(phase) });
    }
  schedule.sort((a, b) => a.t - b.t);
  for (const step of schedule) {
    const wait = step.t * 1000 - (performance.now() - t0);
    if (wait > 0) await sleep(wait);
    await step.run();
  }

  running = false;
  await loadLoop;
  clearInterval(routingTimer);
  await Promise.all(pending);
  await restarting;
  const seconds = elapsedS();
  const gatewayStats = gateways.map((g) => g.stats());
  const reportsFailed = retired.reportsFailed + gatewayStats.reduce((a, s) => a + s.reportsFailed, 0);
  const reportsTooOld = retired.reportsTooOld + gatewayStats.reduce((a, s) => a + s.reportsTooOld, 0);
  if (reportsFailed > 0) bump(errors, "gateway report failed (or timed out)", reportsFailed);
  if (reportsTooOld > 0) bump(errors, "gateway report too old (resent)", reportsTooOld);
  for (const g of gateways) g.close();
  for (const r of rpcs.values()) r.close();

  // ---- the verdict -----------------------------------------------------------------------------
  const startW = { from: WARMUP_S, to: WARMUP_S + WINDOW_S };
  const endW = { from: TOTAL_S - WINDOW_S, to: TOTAL_S };
  const midW = { from: TOTAL_S / 2 - WINDOW_S / 2, to: TOTAL_S / 2 + WINDOW_S / 2 };
  const th = THRESHOLDS;
  console.log(
    `\nstart window ${startW.from}-${startW.to} s, mid-run window ${midW.from}-${midW.to} s, end window ${endW.from}-${endW.to} s. Memory: minimum over the window; handles and lag p99 (per 10 s): median. Live heap: as of the latest major GC.`,
  );
  console.log(
    `Not flat when: live heap +${th.heapGrowthFraction * 100}% and +${mb(th.heapGrowthBytes)}; RSS - heap total +${th.nativeGrowthFraction * 100}% and +${mb(th.nativeGrowthBytes)} from mid-run; handles +${th.handlesGrowth}; lag p99 end > ${th.lagFactor}x start and > ${msOf(th.lagEndSeconds)}\n`,
  );
  const perProcess: Record<
    string,
    { start?: Figures; end?: Figures; verdicts: Verdict[]; cpuPerS?: number }
  > = {};
  let allFlat = true;
  for (const [id, list] of samples) {
    const start = figures(list, startW);
    const end = figures(list, endW);
    const mid = figures(list, midW);
    if (!start || !end) {
      console.log(`${id}: not enough samples (${list.length})`);
      allFlat = false;
      perProcess[id] = { start, end, verdicts: [] };
      continue;
    }
    const restarts = (incarnation.get(id) ?? 1) - 1;
    const verdicts = judge(
      start,
      end,
      mid,
      th,
      id === RESTARTED && restarts > 0 ? `restarted ${restarts} times: a new process each cycle` : undefined,
    );
    const last = list.filter((s) => s.incarnation === list.at(-1)!.incarnation);
    const cpuPerS =
      last.length > 1
        ? (last.at(-1)!.cpuSeconds - last[0]!.cpuSeconds) / (last.at(-1)!.t - last[0]!.t)
        : undefined;
    perProcess[id] = { start, end, verdicts, cpuPerS };
    const fmt = (metric: string, v: number) =>
      metric === "lag p99" ? msOf(v) : metric === "handles" ? String(v) : mb(v);
    const change = (v: Verdict) => {
      const d = v.end - v.start;
      const sign = d >= 0 ? "+" : "-";
      return `${sign}${fmt(v.metric, Math.abs(d))}${v.start > 0 ? ` (${sign}${((100 * Math.abs(d)) / v.start).toFixed(0)}%)` : ""}`;
    };
    console.log(
      `${id}${id === "soak" ? " (this process: 3 gateways, sync clients)" : ""}: ${list.length} samples${missed.get(id) ? `, ${missed.get(id)} missed (down)` : ""}${restarts > 0 ? `, restarted ${restarts} times` : ""}${cpuPerS !== undefined ? `, CPU ${(100 * cpuPerS).toFixed(0)}% of a core` : ""}${start.counters !== undefined ? `, counters ${start.counters} -> ${end.counters}, clients ${start.clients} -> ${end.clients}` : ""}`,
    );
    printTable(
      ["metric", "start", "end", "change", "flat"],
      verdicts.map((v) => [
        v.metric,
        fmt(v.metric, v.start),
        fmt(v.metric, v.end),
        change(v),
        v.skipped ? `not judged (${v.skipped})` : v.flat ? "yes" : "NO",
      ]),
    );
    console.log();
    if (verdicts.some((v) => !v.flat)) allFlat = false;
  }

  const totalDecisions = [...decisions.values()].reduce((a, b) => a + b, 0);
  const totalErrors = [...errors.values()].reduce((a, b) => a + b, 0);
  console.log(
    `decisions: ${totalDecisions} in ${seconds.toFixed(0)} s (${(totalDecisions / seconds).toFixed(0)}/s); skipped at the in-flight cap: ${skipped}`,
  );
  printTable(
    ["decision", "count"],
    [...decisions].sort().map(([k, v]) => [k, v]),
  );
  console.log(`\nerrors seen by clients: ${totalErrors}`);
  if (totalErrors > 0)
    printTable(
      ["error", "count"],
      [...errors].sort().map(([k, v]) => [k, v]),
    );
  console.log("\nchurn:");
  for (const e of events)
    console.log(
      `  ${String(e.t).padStart(4)} s  ${e.what}${e.ms !== undefined ? ` (${e.ms} ms)` : ""}${e.detail ? `: ${e.detail}` : ""}`,
    );
  console.log(
    `config reloads seen by the servers: ${[...reloads].map(([id, r]) => `${id} ${r}`).join("; ")}`,
  );
  if (serverLogs.size > 0) {
    console.log("\nserver warnings and errors (logged at warn and above):");
    printTable(
      ["message", "count"],
      [...serverLogs].sort().map(([k, v]) => [k, v]),
    );
  }
  console.log(
    `\n${allFlat ? "FLAT" : "NOT FLAT"}: ${allFlat ? "every judged figure within the thresholds" : "see NO above"}`,
  );

  const file = path.resolve(opts.json);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        machine: m,
        options: opts,
        windows: {
          warmupS: WARMUP_S,
          start: startW,
          mid: midW,
          end: endW,
          cycleS: CYCLE_S,
          sampleS: SAMPLE_S,
        },
        thresholds: th,
        flat: allFlat,
        seconds,
        decisions: Object.fromEntries(decisions),
        totalDecisions,
        errors: Object.fromEntries(errors),
        totalErrors,
        skipped,
        events,
        configReloads: Object.fromEntries(reloads),
        serverLogs: Object.fromEntries(serverLogs),
        perProcess,
        samples: Object.fromEntries(samples),
      },
      null,
      2,
    )}\n`,
  );
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
  return allFlat ? 0 : 1;
}
