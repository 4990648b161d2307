import { execFileSync, spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { HEAP_OPTIONS } from "../app/heap.js";
import { grpcFrame } from "../protocol/fast-encode.js";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE, serviceDefinition } from "../protocol/proto.js";
import { latencyHistogram } from "../testkit/histogram.js";
import { openLoop } from "../testkit/open-loop.js";
import { freePort } from "../testkit/ports.js";
import { serverProcess, waitAllReady, writeConfig } from "../testkit/serve.js";
import { tempDir } from "../testkit/temp-dir.js";
import { clockTicks, processCpuSeconds, treeCpuSeconds } from "./cpu.js";
import { startDoNothing } from "./do-nothing.js";
import { H2Client } from "./h2-client.js";
import { BENCH_LIMITS } from "./stack.js";

/**
 * `shardlimit bench sync-compare`: the synchronous path at the machine's limit (issue 16), on a
 * machine whose cores are shared. Servers, each in its own process, answer the same request:
 * shardlimit on the lean transport, shardlimit on grpc-js, a do-nothing grpc-js server and a
 * do-nothing node:http2 server (src/loadtest/do-nothing.ts), and optionally shardlimit lean with
 * `--workers N`.
 *
 * - Maximum rate: every system is warmed up (a short closed loop), then measured in interleaved
 *   rounds (A B C D, A B C D, ...) so that a neighbour's burst hits all of them alike; each round
 *   records calls/s and, from /proc, the server's CPU time per call (its process tree) and the
 *   generator's. Ratios are taken within each round and reported as the median and the range.
 *   CPU per call hardly moves when a neighbour takes cores; calls/s does.
 * - Latency: an open loop at half of each system's median maximum, and the do-nothing node:http2
 *   server at each shardlimit system's half rate, in pairs in turns, on the same generator as the
 *   closed loop (`h2loadOpen`: its `--rps` sends what is due in bursts on a ~10 ms tick, the same
 *   for every system); the Node client keeps each call's own time but spins a core to do it,
 *   which at a rate measured with h2load leaves the server one core of two.
 * - Worst call (`worstSeconds` > 0): shardlimit lean and the do-nothing node:http2 server each
 *   in an open loop at one rate for that long; beside their worst calls, the generator's own
 *   worst lateness in sending, which is the machine (the generator process got no CPU), not a server.
 *
 * The closed loop uses h2load (nghttp2-client, a C program) when installed, else the Node HTTP/2
 * client (src/loadtest/h2-client.ts). h2load only sees HTTP status 200, so every system's answer
 * is checked once (gRPC status 0) before it is measured.
 */

export interface SyncCompareOptions {
  /** Seconds of each closed-loop round. */
  seconds: number;
  /** Interleaved closed-loop rounds (at least 1; 3 or more for a median that means something). */
  rounds: number;
  /** Seconds of the closed-loop warm-up of each system, per request, before the rounds. */
  warmSeconds: number;
  /** Seconds of each open-loop run at half rate (0: none). */
  openSeconds: number;
  /** Seconds of the worst-call runs (0: none). */
  worstSeconds: number;
  /**
   * One open-loop rate for every system (and the worst-call runs) instead of half of each one's
   * maximum: on a machine whose share of CPU moves between the closed and the open loop, half of
   * a maximum measured a minute earlier can be more than the server gets now.
   */
  openRate?: number;
  /** h2load, the Node client, or h2load when installed (auto): closed and open loops. */
  generator: "auto" | "h2load" | "node";
  /** Connections, and streams in flight on each (closed loop). */
  clients: number;
  streams: number;
  /** Connections of the open loop with h2load, opened 1 ms apart (default 1; see `h2loadOpen`). */
  openConnections?: number;
  /** Only these requests (default both). */
  requests?: readonly RequestName[];
  /** Also shardlimit lean with `--workers n` for each n here (a private etcd from PATH). */
  workers?: readonly number[];
  /** Only the do-nothing node:http2 server and shardlimit lean (and the workers systems). */
  leanOnly?: boolean;
  /** More `serve` flags for every shardlimit system (e.g. `--heap-growing-percent 0`). */
  serverArgs?: readonly string[];
  log?: (line: string) => void;
}

export type RequestName = "ShouldRateLimit" | "Check";

const PATHS: Record<RequestName, string> = {
  ShouldRateLimit: "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
  Check: "/shardlimit.v1.RateLimiter/Check",
};

const BASELINE = "do-nothing http2";
const LEAN = "shardlimit lean";

const envoyDef = serviceDefinition(ENVOY_RLS_SERVICE).ShouldRateLimit!;
const checkDef = serviceDefinition(RATE_LIMITER_SERVICE).Check!;

/**
 * `NODE_OPTIONS` with the server's heap options (`app/heap.ts`): every system runs with them, as
 * the `shardlimit` command and the image run the server, however the bench itself was started
 * (`node dist/cli/main.js bench ...` has no such flag of its own to pass on).
 */
function withHeapOptions(nodeOptions: string | undefined): string {
  return [nodeOptions ?? "", ...HEAP_OPTIONS].join(" ").trim();
}

/** The request bodies (unframed) and a real answer of each, for the do-nothing servers. */
function requests(): Record<RequestName, { body: Buffer; answer: Buffer }> {
  return {
    ShouldRateLimit: {
      body: envoyDef.requestSerialize({
        domain: "bench",
        descriptors: [{ entries: [{ key: "k", value: "a" }] }, { entries: [{ key: "k", value: "b" }] }],
        hitsAddend: 1,
      }),
      answer: envoyDef.responseSerialize({
        overallCode: 1,
        statuses: [
          { code: 1, currentLimit: { requestsPerUnit: 1_000_000, unit: 1 }, limitRemaining: 999_999 },
          { code: 1, currentLimit: { requestsPerUnit: 1_000_000, unit: 1 }, limitRemaining: 999_999 },
        ],
      }),
    },
    Check: {
      body: checkDef.requestSerialize({ items: [{ key: "bench/k=c", cost: 1 }] }),
      answer: checkDef.responseSerialize({
        results: [{ allowed: true, remaining: 999_999, limit: 1_000_000 }],
      }),
    },
  };
}

export interface LatencyRow {
  rate: number;
  achieved: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  /**
   * The generator's worst lateness in sending a call: a stall of the machine, not of the server
   * (NaN with h2load, which does not say).
   */
  sendLagMaxMs: number;
  errors: number;
}

/** One closed-loop round of one system. */
export interface Round {
  perSec: number;
  calls: number;
  errors: number;
  /** Server CPU (its process tree, user + system) per call, µs. */
  serverCpuUs: number;
  /** Generator CPU per call, µs. */
  generatorCpuUs: number;
}

/** Median and range of a figure over the rounds. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

export interface SystemResult {
  system: string;
  request: RequestName;
  rounds: Round[];
  perSec: Spread;
  serverCpuUs: Spread;
  generatorCpuUs: Spread;
  /** The median calls/s (the "maximum rate"). */
  maxPerSec: number;
  closedErrors: number;
  half?: LatencyRow;
  /** The do-nothing node:http2 server at this system's half-maximum (shardlimit systems only). */
  baselineAtSameRate?: LatencyRow;
  /** Every open-loop run of the pairs, this system's and the baseline's, in turns (`half` and `baselineAtSameRate` are the median by P99). */
  halfRounds?: LatencyRow[];
  baselineRounds?: LatencyRow[];
}

export interface Ratio {
  request: RequestName;
  system: string;
  /** Calls/s against the do-nothing node:http2 server's in the same round. */
  rate: Spread;
  /** The do-nothing node:http2 server's CPU per call over this system's, in the same round. */
  cpu: Spread;
  p99VsHttp2SameRate?: number;
  /** That ratio in each open-loop pair (its median is `p99VsHttp2SameRate`). */
  p99Rounds?: Spread;
}

export interface WorstRow {
  system: string;
  rate: number;
  seconds: number;
  row: LatencyRow;
}

export interface SyncCompareResult {
  date: string;
  generator: "h2load" | "node";
  cpus: number;
  loadavgBefore: number[];
  loadavgAfter: number[];
  seconds: number;
  rounds: number;
  openSeconds: number;
  /** The one open-loop rate (`openRate`), when given. */
  openRate?: number;
  clients: number;
  streams: number;
  results: SystemResult[];
  /** The issue's must-show ratios, per request and shardlimit system. */
  ratios: Ratio[];
  worst: WorstRow[];
}

export function h2loadInstalled(): boolean {
  try {
    execFileSync("h2load", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

interface ClosedRun {
  calls: number;
  errors: number;
  seconds: number;
  generatorCpuSeconds: number;
}

type ClosedLoop = (
  urls: readonly string[],
  pathName: string,
  body: Buffer,
  seconds: number,
) => Promise<ClosedRun>;

/** Runs `cmd` to the end; its output and the CPU seconds it used (read by the shell that waited for it). */
function runCounted(cmd: string, args: string[]): Promise<{ out: string; cpuSeconds: number }> {
  // The shell's own /proc stat, after `wait`, holds its waited-for children's CPU (cutime, cstime).
  const script = `"$@"; s=$?; read -r st < /proc/$$/stat; echo "CPUSTAT $st" >&2; exit $s`;
  return new Promise((resolve, reject) => {
    const c = spawn("sh", ["-c", script, "sh", cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    c.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    c.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    c.once("error", reject);
    c.once("exit", (code) => {
      const m = /CPUSTAT (.*)/.exec(out);
      const rest = m ? m[1]!.slice(m[1]!.lastIndexOf(")") + 2).split(" ") : [];
      const cpuSeconds = (Number(rest[13]) + Number(rest[14])) / clockTicks();
      if (code === 0) resolve({ out, cpuSeconds });
      else reject(new Error(`${cmd} exited ${code}: ${out}`));
    });
  });
}

/**
 * h2load, one thread per URL (a `--workers` system has one port per worker), `clients` connections
 * spread over them, `streams` in flight on each.
 */
/** h2load's arguments for gRPC calls of `body` (written framed to a file in `dir`), on one thread. */
function h2loadGrpcArgs(dir: string, body: Buffer): string[] {
  const f = path.join(dir, "body.bin");
  writeFileSync(f, grpcFrame(body));
  return ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", f, "-t", "1"];
}

/** The calls h2load's summary counts as succeeded, and the rest (failed, errored, timed out). */
function h2loadCounts(out: string): { ok: number; failed: number } {
  const m = /(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (m === null) throw new Error(`h2load printed no counts:\n${out}`);
  return { ok: Number(m[1]), failed: Number(m[2]) + Number(m[3]) + Number(m[4]) };
}

function h2loadClosed(o: SyncCompareOptions, dir: string): ClosedLoop {
  return async (urls, pathName, body, seconds) => {
    const grpc = h2loadGrpcArgs(dir, body);
    const perUrl = Math.max(1, Math.round(o.clients / urls.length));
    const runs = await Promise.all(
      urls.map((url) =>
        runCounted("h2load", [
          ...grpc,
          ...["-c", String(perUrl), "-m", String(o.streams), "-D", String(seconds)],
          `${url}${pathName}`,
        ]),
      ),
    );
    let calls = 0;
    let errors = 0;
    let cpu = 0;
    for (const r of runs) {
      const n = h2loadCounts(r.out);
      calls += n.ok;
      errors += n.failed;
      cpu += r.cpuSeconds;
    }
    return { calls, errors, seconds, generatorCpuSeconds: cpu };
  };
}

/** The Node client (src/loadtest/h2-client.ts) on this thread, when h2load is not installed. */
function nodeClosed(o: SyncCompareOptions): ClosedLoop {
  return async (urls, pathName, body, seconds) => {
    const clients = await connectAll(urls, o.clients);
    let done = 0;
    let errors = 0;
    const cpu0 = processCpuSeconds(process.pid)!;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    await Promise.all(
      clients.flatMap((c) =>
        Array.from({ length: o.streams }, async () => {
          while (performance.now() < end) {
            try {
              await c.callAsync(pathName, body);
              done++;
            } catch {
              errors++;
            }
          }
        }),
      ),
    );
    const wall = (performance.now() - t0) / 1000;
    for (const c of clients) c.close();
    return {
      calls: done,
      errors,
      seconds: wall,
      generatorCpuSeconds: processCpuSeconds(process.pid)! - cpu0,
    };
  };
}

/** An open loop: `rate` calls/s for `seconds` over `urls`, each call's latency measured. */
type OpenLoop = (
  urls: readonly string[],
  pathName: string,
  body: Buffer,
  rate: number,
  seconds: number,
) => Promise<LatencyRow>;

/**
 * Open loop on h2load (`--rps` per connection), which leaves the cores to the servers: the Node
 * client spins a core to keep its schedule, so at half of a maximum measured with h2load the
 * server got one core where it had had two, and queued (P99 of hundreds of ms, do-nothing servers
 * included). h2load's `--rps` sends each connection's due calls in bursts on a ~10 ms tick. One
 * connection by default (Envoy, too, multiplexes its calls over a few): more of them, even opened
 * 1 ms apart (`-r 1 --rate-period 1ms`) to spread their bursts, made every system's tail worse on
 * this machine (the do-nothing node:http2 server at 10,000/s: P99 3 ms on one connection, 7-9 ms on
 * two to four, 34 ms on sixteen). Every system meets the same arrivals. Latencies come from
 * h2load's per-request log (microseconds).
 */
function h2loadOpen(o: SyncCompareOptions, dir: string): OpenLoop {
  return async (urls, pathName, body, rate, seconds) => {
    const grpc = h2loadGrpcArgs(dir, body);
    const perUrl = Math.max(1, Math.round((o.openConnections ?? 1) / urls.length));
    const calls = Math.max(1, Math.round((rate * seconds) / urls.length));
    const runs = await Promise.all(
      urls.map(async (url, i) => {
        // h2load appends to its log file: a fresh one per run.
        const logFile = path.join(dir, `open-${i}.log`);
        rmSync(logFile, { force: true });
        const r = await runCounted("h2load", [
          ...grpc,
          ...["-c", String(perUrl), "-m", "100", "--rps", String(rate / urls.length / perUrl)],
          ...["-n", String(calls), "-r", "1", "--rate-period", "1ms", "--log-file", logFile],
          `${url}${pathName}`,
        ]);
        return { out: r.out, log: readFileSync(logFile, "utf8") };
      }),
    );
    const latency = latencyHistogram();
    let ok = 0;
    let errors = 0;
    let first = Number.POSITIVE_INFINITY;
    let last = 0;
    for (const r of runs) {
      const n = h2loadCounts(r.out);
      ok += n.ok;
      errors += n.failed;
      // Each line: start (µs since the epoch), HTTP status, duration (µs).
      for (const line of r.log.split("\n")) {
        const [start, , duration] = line.split("\t").map(Number);
        if (!Number.isFinite(start) || !Number.isFinite(duration)) continue;
        latency.recordValue(Math.max(1, duration!));
        first = Math.min(first, start!);
        last = Math.max(last, start! + duration!);
      }
    }
    const wall = last > first ? (last - first) / 1e6 : seconds;
    return {
      rate,
      achieved: Math.round(ok / wall),
      p50Ms: latency.getValueAtPercentile(50) / 1000,
      p99Ms: latency.getValueAtPercentile(99) / 1000,
      p999Ms: latency.getValueAtPercentile(99.9) / 1000,
      maxMs: latency.maxValue / 1000,
      sendLagMaxMs: Number.NaN,
      errors,
    };
  };
}

/** Open loop on the Node client with a spinning schedule: each call leaves at its own time. */
function nodeOpen(o: SyncCompareOptions): OpenLoop {
  return async (urls, pathName, body, rate, seconds) => {
    const clients = await connectAll(urls, o.clients);
    const out = await openLoop({
      ratePerSec: rate,
      seconds,
      spin: true,
      call: (i) => clients[i % clients.length]!.callAsync(pathName, body),
    });
    for (const c of clients) c.close();
    return {
      rate,
      achieved: Math.round(out.completed / seconds),
      p50Ms: out.latency.getValueAtPercentile(50) / 1000,
      p99Ms: out.latency.getValueAtPercentile(99) / 1000,
      p999Ms: out.latency.getValueAtPercentile(99.9) / 1000,
      maxMs: out.latency.maxValue / 1000,
      sendLagMaxMs: out.sendLag.maxValue / 1000,
      errors: out.errors,
    };
  };
}

/** `n` connections spread over `urls`. */
async function connectAll(urls: readonly string[], n: number): Promise<H2Client[]> {
  const out: H2Client[] = [];
  for (let i = 0; i < Math.max(n, urls.length); i++) {
    const c = new H2Client(urls[i % urls.length]!.replace(/^http:\/\//, ""));
    await c.ready();
    out.push(c);
  }
  return out;
}

interface System {
  name: string;
  urls: string[];
  pid: number;
  stop(): Promise<void>;
}

/** The run whose P99 is the median of `rows` (the lower middle one of an even count). */
function medianRow(rows: readonly LatencyRow[]): LatencyRow {
  const byP99 = [...rows].sort((a, b) => a.p99Ms - b.p99Ms);
  return byP99[(byP99.length - 1) >> 1]!;
}

export function spread(xs: readonly number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

/** `n` free ports in a row (testkit/ports.ts hands them out in turn; one taken meanwhile breaks the row). */
async function consecutivePorts(n: number): Promise<number> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) ports.push(await freePort());
    if (ports.every((p, i) => p === ports[0]! + i)) return ports[0]!;
  }
  throw new Error(`found no ${n} free ports in a row for the workers`);
}

async function startSystems(o: SyncCompareOptions, answers: Map<string, Buffer>): Promise<System[]> {
  const systems: System[] = [];
  try {
    const configPath = writeConfig(BENCH_LIMITS);
    const shardlimit: { name: string; args: string[]; workers: number }[] = [
      { name: LEAN, args: ["--transport", "lean"], workers: 1 },
    ];
    if (!o.leanOnly)
      shardlimit.push({ name: "shardlimit grpc-js", args: ["--transport", "grpc-js"], workers: 1 });
    for (const n of o.workers ?? []) {
      shardlimit.push({
        name: `${LEAN} workers=${n}`,
        args: ["--transport", "lean", "--workers", String(n)],
        workers: n,
      });
    }
    for (const x of shardlimit) {
      // Worker i listens on --grpc-port + i: ports of their own, apart from the HTTP port.
      const base = x.workers > 1 ? await consecutivePorts(x.workers) : undefined;
      const s = await serverProcess({
        id: x.name.replace(/\W+/g, "-"),
        configPath,
        extraArgs: [
          ...x.args,
          ...(o.serverArgs ?? []),
          ...(base === undefined ? [] : ["--grpc-port", String(base)]),
        ],
        env: { NODE_OPTIONS: withHeapOptions(process.env.NODE_OPTIONS) },
      });
      await s.start();
      systems.push({
        name: x.name,
        urls: Array.from({ length: x.workers }, (_, i) => `http://127.0.0.1:${(base ?? s.grpcPort) + i}`),
        pid: s.pid()!,
        stop: () => s.stop(),
      });
      if (x.workers > 1) await waitAllReady([s], 60_000);
    }
    const kinds = o.leanOnly ? (["http2"] as const) : (["grpc-js", "http2"] as const);
    for (const kind of kinds) {
      const d = await startDoNothing(kind, answers, HEAP_OPTIONS);
      systems.push({
        name: `do-nothing ${kind}`,
        urls: [`http://127.0.0.1:${d.port}`],
        pid: d.child.pid!,
        stop: () => d.stop(),
      });
    }
  } catch (err) {
    for (const s of systems) await s.stop();
    throw err;
  }
  return systems;
}

/** Runs the comparison; every process it starts is stopped before it returns. */
export async function runSyncCompare(o: SyncCompareOptions): Promise<SyncCompareResult> {
  const log = o.log ?? (() => {});
  if (!(o.rounds >= 1)) throw new Error(`rounds must be at least 1, not ${o.rounds}`);
  const useH2load = o.generator === "h2load" || (o.generator === "auto" && h2loadInstalled());
  if (o.generator === "h2load" && !h2loadInstalled()) {
    throw new Error("h2load is not installed (Debian: apt-get install nghttp2-client)");
  }
  const dir = tempDir("shardlimit-sync-");
  const closed = useH2load ? h2loadClosed(o, dir) : nodeClosed(o);
  const openRun = useH2load ? h2loadOpen(o, dir) : nodeOpen(o);
  const reqs = requests();
  const names = o.requests ?? (["ShouldRateLimit", "Check"] as const);
  const answers = new Map(names.map((n) => [PATHS[n], reqs[n].answer]));
  const loadavgBefore = loadavg();
  const results: SystemResult[] = [];
  const ratios: Ratio[] = [];
  const worst: WorstRow[] = [];
  const systems = await startSystems(o, answers);
  try {
    const http2 = systems.find((s) => s.name === BASELINE)!;
    for (const request of names) {
      const { body } = reqs[request];
      const p = PATHS[request];
      for (const s of systems) await checkAnswers(s, p, body);
      for (const s of systems) {
        log(`${request}: ${s.name}, warm-up ${o.warmSeconds}s`);
        await closed(s.urls, p, body, o.warmSeconds);
      }
      const rounds = new Map<string, Round[]>(systems.map((s) => [s.name, []]));
      for (let r = 0; r < o.rounds; r++) {
        for (const s of systems) {
          const cpu0 = treeCpuSeconds(s.pid);
          const run = await closed(s.urls, p, body, o.seconds);
          const cpu = treeCpuSeconds(s.pid) - cpu0;
          const calls = Math.max(1, run.calls);
          const round: Round = {
            perSec: run.calls / run.seconds,
            calls: run.calls,
            errors: run.errors,
            serverCpuUs: (cpu * 1e6) / calls,
            generatorCpuUs: (run.generatorCpuSeconds * 1e6) / calls,
          };
          rounds.get(s.name)!.push(round);
          log(
            `${request}: round ${r + 1} ${s.name}: ${Math.round(round.perSec)}/s, server ${round.serverCpuUs.toFixed(1)} µs/call, generator ${round.generatorCpuUs.toFixed(1)} µs/call`,
          );
        }
      }
      const mine: SystemResult[] = systems.map((s) => {
        const rs = rounds.get(s.name)!;
        const perSec = spread(rs.map((x) => x.perSec));
        return {
          system: s.name,
          request,
          rounds: rs,
          perSec,
          serverCpuUs: spread(rs.map((x) => x.serverCpuUs)),
          generatorCpuUs: spread(rs.map((x) => x.generatorCpuUs)),
          maxPerSec: Math.round(perSec.median),
          closedErrors: rs.reduce((a, x) => a + x.errors, 0),
        };
      });
      results.push(...mine);
      const base = rounds.get(BASELINE)!;
      for (const s of systems.filter((x) => x.name.startsWith("shardlimit"))) {
        const rs = rounds.get(s.name)!;
        ratios.push({
          request,
          system: s.name,
          rate: spread(rs.map((x, i) => x.perSec / base[i]!.perSec)),
          cpu: spread(rs.map((x, i) => base[i]!.serverCpuUs / x.serverCpuUs)),
        });
      }
      if (o.openSeconds > 0) {
        for (const x of mine) {
          const s = systems.find((y) => y.name === x.system)!;
          const rate = o.openRate ?? Math.round(x.maxPerSec / 2);
          log(`${request}: ${s.name}, open loop at ${rate}/s`);
          x.half = await openRun(s.urls, p, body, rate, o.openSeconds);
          if (s.name.startsWith("shardlimit") && o.openRate === undefined) {
            // `rounds` pairs in turns, the ratio taken within each: one run's P99 on a shared
            // machine is set as much by its stalls as by the server.
            const own = [x.half];
            const base: LatencyRow[] = [];
            for (let r = 0; r < o.rounds; r++) {
              if (r > 0) own.push(await openRun(s.urls, p, body, rate, o.openSeconds));
              log(`${request}: ${BASELINE} at ${s.name}'s half rate ${rate}/s (round ${r + 1})`);
              base.push(await openRun(http2.urls, p, body, rate, o.openSeconds));
            }
            x.halfRounds = own;
            x.baselineRounds = base;
            x.half = medianRow(own);
            x.baselineAtSameRate = medianRow(base);
            const q = ratios.find((y) => y.request === request && y.system === s.name)!;
            q.p99Rounds = spread(own.map((row, i) => row.p99Ms / base[i]!.p99Ms));
            q.p99VsHttp2SameRate = q.p99Rounds.median;
          }
        }
        // One rate for all: the do-nothing node:http2 server's own run is the same-rate baseline.
        const baseHalf = mine.find((x) => x.system === BASELINE)!.half!;
        if (o.openRate !== undefined) {
          for (const q of ratios.filter((y) => y.request === request)) {
            q.p99VsHttp2SameRate = mine.find((x) => x.system === q.system)!.half!.p99Ms / baseHalf.p99Ms;
          }
        }
      }
      if (o.worstSeconds > 0) {
        const lean = mine.find((x) => x.system === LEAN)!;
        const rate = o.openRate ?? Math.round(lean.maxPerSec / 2);
        for (const name of [LEAN, BASELINE]) {
          const s = systems.find((y) => y.name === name)!;
          log(`${request}: ${name}, worst call of ${o.worstSeconds}s at ${rate}/s`);
          worst.push({
            system: `${request} ${name}`,
            rate,
            seconds: o.worstSeconds,
            row: await openRun(s.urls, p, body, rate, o.worstSeconds),
          });
        }
      }
    }
  } finally {
    for (const s of systems) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    date: new Date().toISOString(),
    generator: useH2load ? "h2load" : "node",
    cpus: cpus().length,
    loadavgBefore,
    loadavgAfter: loadavg(),
    seconds: o.seconds,
    rounds: o.rounds,
    openSeconds: o.openSeconds,
    openRate: o.openRate,
    clients: o.clients,
    streams: o.streams,
    results,
    ratios,
    worst,
  };
}

/** One call through the Node client: a system must answer gRPC status 0 with a message. */
async function checkAnswers(s: System, pathName: string, body: Buffer): Promise<void> {
  const cs = await connectAll(s.urls, s.urls.length);
  try {
    for (const c of cs) {
      const res = await c.callAsync(pathName, body);
      if (res.length === 0) throw new Error(`${s.name} answered ${pathName} with an empty message`);
    }
  } catch (err) {
    throw new Error(
      `${s.name} does not answer ${pathName}: ${(err as Error).message ?? JSON.stringify(err)}`,
    );
  } finally {
    for (const c of cs) c.close();
  }
}

const f = (n: number, d = 2) => n.toFixed(d);
const sp = (s: Spread, d = 0) => `${f(s.median, d)} (${f(s.min, d)}-${f(s.max, d)})`;

function latencyLine(label: string, x: LatencyRow): string {
  const lag = Number.isFinite(x.sendLagMaxMs) ? `generator late by up to ${f(x.sendLagMaxMs)} ms, ` : "";
  return `  ${label.padEnd(34)} ${String(x.rate).padStart(7)}/s  P50 ${f(x.p50Ms)}  P99 ${f(x.p99Ms)}  P99.9 ${f(x.p999Ms)}  max ${f(x.maxMs)} ms  (${lag}${x.errors} errors)`;
}

/** The report as text: per request the systems' medians (and ranges), latencies, then the ratios. */
export function formatSyncCompare(r: SyncCompareResult): string {
  const lines = [
    `generator ${r.generator} (closed and open loops); ${r.cpus} CPUs; load average ${r.loadavgBefore.map((x) => f(x)).join(" ")} before, ${r.loadavgAfter.map((x) => f(x)).join(" ")} after`,
    `${r.rounds} interleaved rounds of ${r.seconds}s, ${r.clients} connections x ${r.streams} streams; median (min-max) over the rounds`,
  ];
  for (const request of new Set(r.results.map((x) => x.request))) {
    lines.push("", `${request}: system, calls/s, server CPU µs/call, generator CPU µs/call, errors`);
    for (const x of r.results.filter((y) => y.request === request)) {
      lines.push(
        `  ${x.system.padEnd(28)} ${sp(x.perSec).padEnd(22)} ${sp(x.serverCpuUs, 1).padEnd(20)} ${sp(x.generatorCpuUs, 1).padEnd(20)} ${x.closedErrors}`,
      );
    }
    const open = r.results.filter((y) => y.request === request && y.half !== undefined);
    if (open.length > 0) {
      lines.push(
        `${request}: open loop ${r.openRate === undefined ? "at half of each one's maximum" : `at ${r.openRate}/s for all`}`,
      );
    }
    for (const x of open) {
      lines.push(latencyLine(x.system, x.half!));
      if (x.baselineAtSameRate)
        lines.push(latencyLine(`  ${BASELINE} at the same rate`, x.baselineAtSameRate));
    }
  }
  if (r.worst.length > 0) {
    lines.push("", "worst call: open loop, the same rate for both");
    for (const w of r.worst) lines.push(latencyLine(`${w.system} (${w.seconds}s)`, w.row));
  }
  lines.push(
    "",
    `ratios against ${BASELINE}, median (min-max) of the rounds (target: rate and CPU >= 0.80x, P99 at the same rate <= 1.30x)`,
  );
  for (const q of r.ratios) {
    lines.push(
      `  ${q.request.padEnd(16)} ${q.system.padEnd(28)} rate ${sp(q.rate, 2)}  CPU per call ${sp(q.cpu, 2)}${q.p99VsHttp2SameRate === undefined ? "" : `  P99 at the same rate ${q.p99Rounds ? sp(q.p99Rounds, 2) : f(q.p99VsHttp2SameRate)}x`}`,
    );
  }
  return lines.join("\n");
}
