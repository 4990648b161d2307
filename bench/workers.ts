/**
 * `serve --workers 2` against `--workers 1` on this machine: the total ShouldRateLimit rate
 * (closed loop, h2load: a C generator, so the servers get what CPU it leaves) and the CPU h2load
 * itself took. Two h2load processes in every run (one per worker port, or both on the one port),
 * each sending one descriptor:
 *  - w1:         --workers 1, both generators on its port, each its own key;
 *  - w2-owners:  --workers 2, each generator on one worker with a key that worker owns (as a
 *                gateway or an Envoy cluster spread over both ports would be, nothing forwarded);
 *  - w2-shared:  --workers 2, each generator on one worker, both with a key worker 0 owns (half
 *                the calls forwarded: the worst case of a key mix).
 * OK answers are counted at the servers (shardlimit_request_duration_seconds_count, code OK) and
 * must match h2load's successes.
 *
 *   npm run build && npx tsx bench/workers.ts [--seconds 10 --connections 16 --streams 32]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { grpcFrame } from "../src/protocol/fast-encode.js";
import { connect } from "../src/protocol/rpc.js";
import { BUILT_CLI, ensureBuilt } from "../src/testkit/cli.js";
import { tempDir } from "../src/testkit/temp-dir.js";
import { machine, num, parseArgs, printTable, writeResult } from "./lib/common.js";
import { BENCH_CONFIG, EnvoyRequestType } from "./lib/wire.js";

const opts = parseArgs({ seconds: 10, warmup: 3, connections: 16, streams: 32 });
const PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dir = tempDir("shardlimit-bench-workers-");

/** A gRPC-framed ShouldRateLimit body for descriptor f=value, in a file for h2load -d. */
function body(value: string): string {
  const pb = EnvoyRequestType.encode({
    domain: "bench",
    descriptors: [{ entries: [{ key: "f", value }] }],
  }).finish();
  const file = path.join(dir, `body-${value}`);
  writeFileSync(file, grpcFrame(pb));
  return file;
}

interface H2Result {
  rps: number;
  succeeded: number;
  cpuS: number;
}

/** One h2load on `port` for `seconds`, in a shell whose `times` gives h2load's CPU. */
function h2load(port: number, bodyFile: string, seconds: number): Promise<H2Result> {
  const cmd = [
    "h2load",
    `-D ${seconds}`,
    `-c ${opts.connections}`,
    `-m ${opts.streams}`,
    "-t 1",
    `-d ${bodyFile}`,
    "-H 'content-type: application/grpc'",
    "-H 'te: trailers'",
    `http://127.0.0.1:${port}${PATH}`,
  ].join(" ");
  return new Promise((resolve, reject) => {
    const p = spawn("bash", ["-c", `${cmd}; times`]);
    let out = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.on("exit", () => {
      const rps = /finished in [\d.]+s, ([\d.]+) req\/s/.exec(out);
      const ok = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded/.exec(out);
      const times = out
        .trim()
        .split("\n")
        .slice(-1)[0]!
        .match(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/);
      if (!rps || !ok || !times) return reject(new Error(`h2load output not understood:\n${out}`));
      const cpuS = Number(times[1]) * 60 + Number(times[2]) + Number(times[3]) * 60 + Number(times[4]);
      resolve({ rps: Number(rps[1]), succeeded: Number(ok[1]), cpuS });
    });
  });
}

interface Served {
  child: ChildProcess;
  grpcPorts: number[];
  /** Where each worker's metrics are read. */
  httpPorts: number[];
  /** The processes answering calls (CPU read from /proc). */
  pids: number[];
  supervisorHttp?: number;
}

async function serve(workers: number): Promise<Served> {
  const config = path.join(dir, "config.yaml");
  writeFileSync(config, BENCH_CONFIG);
  const child = spawn(process.execPath, [
    BUILT_CLI,
    "serve",
    "--config",
    config,
    ...["--grpc-host", "127.0.0.1", "--http-host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"],
    ...["--workers", String(workers), "--log-level", "info"],
  ]);
  let buf = "";
  return new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`serve exited (${code}) before serving`)));
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split("\n").slice(0, -1)) {
        if (!line.startsWith("{")) continue;
        const l = JSON.parse(line) as Record<string, unknown>;
        if (workers === 1 && l.msg === "shardlimit serving")
          resolve({
            child,
            grpcPorts: [l.grpcPort as number],
            httpPorts: [l.httpPort as number],
            pids: [child.pid!],
          });
        if (workers > 1 && l.msg === "shardlimit workers serving") {
          const ws = l.workers as { grpcPort: number; httpPort: number; pid: number }[];
          resolve({
            child,
            grpcPorts: ws.map((w) => w.grpcPort),
            httpPorts: ws.map((w) => w.httpPort),
            pids: ws.map((w) => w.pid),
            supervisorHttp: l.httpPort as number,
          });
        }
      }
      buf = buf.slice(buf.lastIndexOf("\n") + 1);
    });
  });
}

async function metric(port: number, name: string, match = ""): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(name) && line.includes(match)) sum += Number(line.split(" ").pop());
  return sum;
}

/** ShouldRateLimit calls answered OK, summed over the workers (forwarded ones count once: Peer.Forward is another method). */
async function okCalls(s: Served): Promise<number> {
  let sum = 0;
  for (const p of s.httpPorts) {
    const text = await (await fetch(`http://127.0.0.1:${p}/metrics`)).text();
    for (const l of text.split("\n"))
      if (
        l.startsWith("shardlimit_request_duration_seconds_count") &&
        l.includes("ShouldRateLimit") &&
        l.includes('code="OK"')
      )
        sum += Number(l.split(" ").pop());
  }
  return sum;
}

/** CPU seconds (user + system) the processes have used, from /proc/PID/stat. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / 100;
}

/** A descriptor value owned by worker `w` (its counter appears there), found by trying values. */
async function ownedBy(s: Served, w: number, from: number): Promise<string> {
  const rpc = connect(`127.0.0.1:${s.grpcPorts[0]}`);
  try {
    for (let i = from; i < from + 64; i++) {
      const before = await metric(s.httpPorts[w]!, "shardlimit_counters ");
      await rpc.shouldRateLimit(
        { domain: "bench", descriptors: [{ entries: [{ key: "f", value: `v${i}` }] }], hitsAddend: 1 },
        { deadlineMs: 5000 },
      );
      if ((await metric(s.httpPorts[w]!, "shardlimit_counters ")) > before) return `v${i}`;
    }
  } finally {
    rpc.close();
  }
  throw new Error(`no key of 64 landed on worker ${w}`);
}

async function run(name: string, s: Served, targets: { port: number; value: string }[]) {
  const files = targets.map((t) => body(t.value));
  await Promise.all(targets.map((t, i) => h2load(t.port, files[i]!, opts.warmup)));
  const ok0 = await okCalls(s);
  const cpu0 = cpuSeconds(s.pids);
  const results = await Promise.all(targets.map((t, i) => h2load(t.port, files[i]!, opts.seconds)));
  const serverCores = (cpuSeconds(s.pids) - cpu0) / opts.seconds;
  const ok = (await okCalls(s)) - ok0;
  const rps = results.reduce((a, r) => a + r.rps, 0);
  const succeeded = results.reduce((a, r) => a + r.succeeded, 0);
  const generatorCores = results.reduce((a, r) => a + r.cpuS, 0) / opts.seconds;
  console.log(
    `${name}: ${num(rps)} calls/s, servers ${serverCores.toFixed(2)} cores, generator ${generatorCores.toFixed(2)} cores, OK at servers ${ok} of ${succeeded}`,
  );
  return {
    name,
    rps,
    succeeded,
    okAtServers: ok,
    serverCores,
    generatorCores,
    perServerCore: rps / serverCores,
  };
}

ensureBuilt();
const m = machine();
console.log(`load average before: ${m.loadAvg1m}`);
const rows = [];
const one = await serve(1);
try {
  const p = one.grpcPorts[0]!;
  rows.push(
    await run("w1", one, [
      { port: p, value: "a" },
      { port: p, value: "b" },
    ]),
  );
} finally {
  one.child.kill("SIGTERM");
  await sleep(1000);
}
const two = await serve(2);
try {
  await sleep(1000);
  const k0 = await ownedBy(two, 0, 0);
  const k1 = await ownedBy(two, 1, 100);
  rows.push(
    await run("w2-owners", two, [
      { port: two.grpcPorts[0]!, value: k0 },
      { port: two.grpcPorts[1]!, value: k1 },
    ]),
  );
  rows.push(
    await run("w2-shared", two, [
      { port: two.grpcPorts[0]!, value: k0 },
      { port: two.grpcPorts[1]!, value: k0 },
    ]),
  );
} finally {
  two.child.kill("SIGTERM");
  await sleep(2000);
}
const base = rows[0]!.rps;
printTable(
  [
    "run",
    "calls/s",
    "x w1",
    "server cores",
    "calls per server core-s",
    "h2load cores",
    "OK at servers / h2load ok",
  ],
  rows.map((r) => [
    r.name,
    num(r.rps),
    (r.rps / base).toFixed(2),
    r.serverCores.toFixed(2),
    num(r.perServerCore),
    r.generatorCores.toFixed(2),
    `${r.okAtServers} / ${r.succeeded}`,
  ]),
);
const loadAfter = machine().loadAvg1m;
console.log(`load average after: ${loadAfter}`);
writeResult("workers", { machine: m, loadAvgAfter: loadAfter, opts, rows });
