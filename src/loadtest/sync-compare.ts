import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE, serviceDefinition } from "../protocol/proto.js";
import { latencyHistogram } from "../testkit/histogram.js";
import { openLoop } from "../testkit/open-loop.js";
import { serverProcess, writeConfig } from "../testkit/serve.js";
import { startDoNothing } from "./do-nothing.js";
import { grpcMessage, H2Client } from "./h2-client.js";
import { BENCH_LIMITS } from "./stack.js";

/**
 * `shardlimit bench sync-compare`: the synchronous path at the machine's limit (issue 16). In one
 * run, on the same request, four servers each in its own process: shardlimit on the lean
 * transport, shardlimit on grpc-js, a do-nothing grpc-js server and a do-nothing node:http2 server
 * (src/loadtest/do-nothing.ts). For each: the most calls/s in a closed loop, then P50/P99/P99.9/max
 * in an open loop at half of its own maximum; the do-nothing node:http2 server is also run at each
 * shardlimit transport's half-maximum, so latencies compare at the same rate. The generator is
 * h2load (nghttp2-client, a C program) when installed, else the Node HTTP/2 client
 * (src/loadtest/h2-client.ts). h2load only sees HTTP status 200, so every system's answer is
 * checked once (gRPC status 0) before it is measured.
 */

export interface SyncCompareOptions {
  /** Seconds of each closed-loop run. */
  seconds: number;
  /** Seconds of each open-loop run. */
  openSeconds: number;
  /** h2load, the Node client, or h2load when installed (auto). */
  generator: "auto" | "h2load" | "node";
  /** Connections, and streams in flight on each (closed loop). */
  clients: number;
  streams: number;
  /** Only these requests (default both). */
  requests?: readonly RequestName[];
  log?: (line: string) => void;
}

export type RequestName = "ShouldRateLimit" | "Check";

const PATHS: Record<RequestName, string> = {
  ShouldRateLimit: "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
  Check: "/shardlimit.v1.RateLimiter/Check",
};

const envoyDef = serviceDefinition(ENVOY_RLS_SERVICE).ShouldRateLimit!;
const checkDef = serviceDefinition(RATE_LIMITER_SERVICE).Check!;

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
  errors: number;
}

export interface SystemResult {
  system: string;
  request: RequestName;
  maxPerSec: number;
  closedErrors: number;
  half: LatencyRow;
  /** The do-nothing node:http2 server at this system's half-maximum (shardlimit systems only). */
  baselineAtSameRate?: LatencyRow;
}

export interface SyncCompareResult {
  date: string;
  generator: "h2load" | "node";
  cpus: number;
  loadavgBefore: number[];
  loadavgAfter: number[];
  seconds: number;
  openSeconds: number;
  clients: number;
  streams: number;
  results: SystemResult[];
  /** The must-show ratios, per request and shardlimit transport. */
  ratios: {
    request: RequestName;
    transport: string;
    maxVsHttp2: number;
    p99VsHttp2SameRate: number;
    maxCallVsHttp2Max: number;
  }[];
}

export function h2loadInstalled(): boolean {
  try {
    execFileSync("h2load", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

interface Generator {
  closed(
    url: string,
    pathName: string,
    body: Buffer,
    seconds: number,
  ): Promise<{ perSec: number; errors: number }>;
  open(url: string, pathName: string, body: Buffer, rate: number, seconds: number): Promise<LatencyRow>;
}

function percentiles(durationsUs: number[], rate: number, seconds: number, errors: number): LatencyRow {
  const h = latencyHistogram();
  for (const d of durationsUs) h.recordValue(Math.max(1, Math.round(d)));
  return {
    rate,
    achieved: Math.round(durationsUs.length / seconds),
    p50Ms: h.getValueAtPercentile(50) / 1000,
    p99Ms: h.getValueAtPercentile(99) / 1000,
    p999Ms: h.getValueAtPercentile(99.9) / 1000,
    maxMs: h.maxValue / 1000,
    errors,
  };
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    c.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    c.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    c.once("error", reject);
    c.once("exit", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${out}`)),
    );
  });
}

/** h2load: closed loop with `clients` x `streams` in flight; open loop with --rps per client. */
function h2loadGenerator(o: SyncCompareOptions, dir: string): Generator {
  const headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"];
  const dataFile = (body: Buffer) => {
    const f = path.join(dir, "body.bin");
    writeFileSync(f, grpcMessage(body));
    return f;
  };
  /** One thread, `o.clients` connections, `streams` in flight on each, for `seconds`. */
  const base = (body: Buffer, streams: number, seconds: number) => [
    ...headers,
    "-d",
    dataFile(body),
    "-t",
    "1",
    "-c",
    String(o.clients),
    "-m",
    String(streams),
    "-D",
    String(seconds),
  ];
  const failedOf = (out: string) => {
    const m = /(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
    return m ? Number(m[2]) + Number(m[3]) + Number(m[4]) : Number.NaN;
  };
  return {
    async closed(url, pathName, body, seconds) {
      const out = await run("h2load", [...base(body, o.streams, seconds), `${url}${pathName}`]);
      const m = /finished in [\d.]+s, ([\d.]+) req\/s/.exec(out);
      if (!m) throw new Error(`h2load printed no rate:\n${out}`);
      return { perSec: Number(m[1]), errors: failedOf(out) };
    },
    async open(url, pathName, body, rate, seconds) {
      const log = path.join(dir, "h2load.log");
      rmSync(log, { force: true });
      const perClient = Math.max(1, Math.round(rate / o.clients));
      const out = await run("h2load", [
        ...base(body, 64, seconds),
        "--rps",
        String(perClient),
        "--log-file",
        log,
        `${url}${pathName}`,
      ]);
      // Each line: start time (µs since the epoch), HTTP status, duration (µs).
      const durations: number[] = [];
      for (const line of readFileSync(log, "utf8").split("\n")) {
        const parts = line.split("\t");
        if (parts.length >= 3) durations.push(Number(parts[2]));
      }
      return percentiles(durations, perClient * o.clients, seconds, failedOf(out));
    },
  };
}

/** The Node client (src/loadtest/h2-client.ts) on this thread, when h2load is not installed. */
function nodeGenerator(o: SyncCompareOptions): Generator {
  return {
    async closed(url, pathName, body, seconds) {
      const clients = await connectAll(url, o.clients);
      let done = 0;
      let errors = 0;
      const end = performance.now() + seconds * 1000;
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
      for (const c of clients) c.close();
      return { perSec: done / seconds, errors };
    },
    async open(url, pathName, body, rate, seconds) {
      const clients = await connectAll(url, o.clients);
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
        errors: out.errors,
      };
    },
  };
}

async function connectAll(url: string, n: number): Promise<H2Client[]> {
  const address = url.replace(/^http:\/\//, "");
  const out: H2Client[] = [];
  for (let i = 0; i < n; i++) {
    const c = new H2Client(address);
    await c.ready();
    out.push(c);
  }
  return out;
}

interface System {
  name: string;
  url: string;
  stop(): Promise<void>;
}

/** Runs the comparison; every process it starts is stopped before it returns. */
export async function runSyncCompare(o: SyncCompareOptions): Promise<SyncCompareResult> {
  const log = o.log ?? (() => {});
  const useH2load = o.generator === "h2load" || (o.generator === "auto" && h2loadInstalled());
  if (o.generator === "h2load" && !h2loadInstalled()) {
    throw new Error("h2load is not installed (Debian: apt-get install nghttp2-client)");
  }
  const dir = mkdtempSync(path.join(tmpdir(), "shardlimit-sync-"));
  const gen = useH2load ? h2loadGenerator(o, dir) : nodeGenerator(o);
  const reqs = requests();
  const names = o.requests ?? (["ShouldRateLimit", "Check"] as const);
  const answers = new Map(names.map((n) => [PATHS[n], reqs[n].answer]));
  const loadavgBefore = loadavg();
  const systems: System[] = [];
  const results: SystemResult[] = [];
  try {
    const configPath = writeConfig(BENCH_LIMITS);
    for (const transport of ["lean", "grpc-js"]) {
      const s = await serverProcess({
        id: transport,
        configPath,
        extraArgs: ["--transport", transport],
      });
      await s.start();
      systems.push({ name: `shardlimit ${transport}`, url: `http://${s.address}`, stop: () => s.stop() });
    }
    for (const kind of ["grpc-js", "http2"] as const) {
      const d = await startDoNothing(kind, answers);
      systems.push({ name: `do-nothing ${kind}`, url: `http://127.0.0.1:${d.port}`, stop: () => d.stop() });
    }
    const http2 = systems[3]!;
    for (const request of names) {
      const { body } = reqs[request];
      for (const s of systems) await checkAnswers(s, PATHS[request], body);
      for (const s of systems) {
        log(`${request}: ${s.name}, closed loop ${o.seconds}s`);
        const closed = await gen.closed(s.url, PATHS[request], body, o.seconds);
        const halfRate = Math.round(closed.perSec / 2);
        log(`${request}: ${s.name}, ${Math.round(closed.perSec)}/s; open loop at ${halfRate}/s`);
        const half = await gen.open(s.url, PATHS[request], body, halfRate, o.openSeconds);
        results.push({
          system: s.name,
          request,
          maxPerSec: Math.round(closed.perSec),
          closedErrors: closed.errors,
          half,
        });
      }
      for (const r of results.filter((x) => x.request === request && x.system.startsWith("shardlimit"))) {
        log(`${request}: do-nothing http2 at ${r.system}'s half rate ${r.half.rate}/s`);
        r.baselineAtSameRate = await gen.open(http2.url, PATHS[request], body, r.half.rate, o.openSeconds);
      }
    }
  } finally {
    for (const s of systems) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const ratios: SyncCompareResult["ratios"] = [];
  for (const request of names) {
    const base = results.find((r) => r.request === request && r.system === "do-nothing http2")!;
    for (const r of results.filter((x) => x.request === request && x.system.startsWith("shardlimit"))) {
      ratios.push({
        request,
        transport: r.system.replace("shardlimit ", ""),
        maxVsHttp2: r.maxPerSec / base.maxPerSec,
        p99VsHttp2SameRate: r.half.p99Ms / r.baselineAtSameRate!.p99Ms,
        maxCallVsHttp2Max: r.half.maxMs / Math.max(base.half.maxMs, r.baselineAtSameRate!.maxMs),
      });
    }
  }
  return {
    date: new Date().toISOString(),
    generator: useH2load ? "h2load" : "node",
    cpus: cpus().length,
    loadavgBefore,
    loadavgAfter: loadavg(),
    seconds: o.seconds,
    openSeconds: o.openSeconds,
    clients: o.clients,
    streams: o.streams,
    results,
    ratios,
  };
}

/** One call through the Node client: a system must answer gRPC status 0 with a message. */
async function checkAnswers(s: System, pathName: string, body: Buffer): Promise<void> {
  const [c] = await connectAll(s.url, 1);
  try {
    const res = await c!.callAsync(pathName, body);
    if (res.length === 0) throw new Error(`${s.name} answered ${pathName} with an empty message`);
  } catch (err) {
    throw new Error(
      `${s.name} does not answer ${pathName}: ${(err as Error).message ?? JSON.stringify(err)}`,
    );
  } finally {
    c!.close();
  }
}

const f = (n: number, d = 2) => n.toFixed(d);

/** The report as text: one table of systems, then the ratios. */
export function formatSyncCompare(r: SyncCompareResult): string {
  const lines = [
    `generator ${r.generator}, ${r.cpus} CPUs, load average ${r.loadavgBefore.map((x) => f(x)).join(" ")} before, ${r.loadavgAfter.map((x) => f(x)).join(" ")} after`,
    "request          system             max/s   errors  half rate  P50 ms  P99 ms  P99.9 ms  max ms",
  ];
  for (const x of r.results) {
    lines.push(
      `${x.request.padEnd(16)} ${x.system.padEnd(18)} ${String(x.maxPerSec).padStart(6)} ${String(x.closedErrors).padStart(8)} ${String(x.half.rate).padStart(10)} ${f(x.half.p50Ms).padStart(7)} ${f(x.half.p99Ms).padStart(7)} ${f(x.half.p999Ms).padStart(9)} ${f(x.half.maxMs).padStart(7)}`,
    );
    if (x.baselineAtSameRate) {
      const b = x.baselineAtSameRate;
      lines.push(
        `${"".padEnd(16)} ${"  http2 same rate".padEnd(18)} ${"".padStart(6)} ${"".padStart(8)} ${String(b.rate).padStart(10)} ${f(b.p50Ms).padStart(7)} ${f(b.p99Ms).padStart(7)} ${f(b.p999Ms).padStart(9)} ${f(b.maxMs).padStart(7)}`,
      );
    }
  }
  lines.push(
    "",
    "ratios (target: max >= 0.80x, P99 <= 1.30x, worst call <= 1.00x of the do-nothing node:http2 server)",
  );
  for (const q of r.ratios) {
    lines.push(
      `${q.request.padEnd(16)} ${q.transport.padEnd(8)} max ${f(q.maxVsHttp2)}x  P99 at same rate ${f(q.p99VsHttp2SameRate)}x  worst call ${f(q.maxCallVsHttp2Max)}x`,
    );
  }
  return lines.join("\n");
}
