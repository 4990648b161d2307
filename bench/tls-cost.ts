/**
 * What TLS costs the gRPC server: batched ingest (500-entry ReportAndGetPolicy, key handles) and
 * single-item `Check`, against a plaintext server and a mutual-TLS one (`--tls-client-auth
 * require`), both in child processes started once, in alternating rounds (which goes first
 * swaps each round, so a drift of the shared machine falls on both). Also the cost of a new
 * connection: connect, handshake and one Check, on fresh connections one after another.
 *
 *   npx tsx bench/tls-cost.ts            (npm run bench:tls)
 *
 * Options: --rounds 3 --seconds 4 --keys 100000 --batch 500 --ingestConcurrency 8
 *          --checkConcurrency 32 --connections 200 --client h2|grpc-js
 * Writes bench/out/tls-cost.json.
 */
import { readFileSync } from "node:fs";
import { makeTestPki } from "../src/testkit/certs.js";
import { machine, median, num, parseArgs, printTable, warnIfBusy, writeResult } from "./lib/common.js";
import {
  type BenchClientTls,
  type Caller,
  closedLoop,
  METHOD,
  makeClient,
  measuredRun,
  type Run,
} from "./lib/raw-client.js";
import { type BenchServer, spawnServer } from "./lib/spawn-server.js";
import {
  BENCH_CONFIG,
  checkRequests,
  handleBodies,
  ReportResponseType,
  reportBodies,
  reportRequest,
} from "./lib/wire.js";

const opts = parseArgs({
  rounds: 3,
  seconds: 4,
  keys: 100_000,
  batch: 500,
  ingestConcurrency: 8,
  checkConcurrency: 32,
  connections: 200,
  client: "h2",
});
const m = machine();
const busy = warnIfBusy(m);

const pki = makeTestPki();
const clientTls: BenchClientTls = {
  ca: readFileSync(pki.ca.caFile),
  cert: readFileSync(pki.client.cert),
  key: readFileSync(pki.client.key),
  serverName: "localhost",
};

console.log(
  `Cost of TLS: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}\n` +
    `client (this process, ${opts.client}) and two servers (child processes, one plaintext, one mutual TLS) share this machine; loopback.\n` +
    `${opts.rounds} rounds of ${opts.seconds} s per workload and mode, modes alternating first.\n`,
);

type Mode = "plaintext" | "mTLS";
interface Side {
  mode: Mode;
  server: BenchServer;
  client: Caller;
  /** Ingest bodies with this server's key handles, and this side's report sequence. */
  bodies: Buffer[];
  seq: number;
  chunk: number;
}

const stringBodies = reportBodies(opts.keys, opts.batch);
const checks = checkRequests(opts.keys, 1);
const clientId = Buffer.from("bench-tls-gw");

async function side(mode: Mode): Promise<Side> {
  const server = await spawnServer({
    config: BENCH_CONFIG,
    pin: false,
    tls:
      mode === "mTLS"
        ? { cert: pki.server.cert, key: pki.server.key, ca: pki.ca.caFile, clientAuth: "require" }
        : undefined,
  });
  const client = await makeClient(opts.client, server.address, 1, mode === "mTLS" ? clientTls : undefined);
  await client.ready();
  const s: Side = { mode, server, client, bodies: stringBodies, seq: 0, chunk: 0 };
  // As the gateway client does: each key's string once, then the handle this server gave it.
  const learned: Buffer[] = [];
  for (const body of stringBodies) {
    learned.push(await client.callAsync(METHOD.report, reportRequest(clientId, ++s.seq, body)));
  }
  s.bodies = handleBodies(
    learned.map((b) => ReportResponseType.decode(b) as never),
    opts.batch,
  );
  return s;
}

const nextReport = (s: Side) => () => {
  const body = s.bodies[s.chunk]!;
  s.chunk = (s.chunk + 1) % s.bodies.length;
  return reportRequest(clientId, ++s.seq, body);
};

type Workload = "ingest" | "check";
const run = (s: Side, w: Workload, seconds: number): Promise<Run> =>
  w === "ingest"
    ? measuredRun(
        s.server,
        s.client,
        METHOD.report,
        opts.ingestConcurrency,
        seconds,
        nextReport(s),
        opts.batch,
      )
    : measuredRun(
        s.server,
        s.client,
        METHOD.check,
        opts.checkConcurrency,
        seconds,
        (i) => checks[i % checks.length]!,
        1,
      );

/** `n` fresh connections one after another, each: connect (and handshake), one Check, close. */
async function newConnections(
  s: Side,
  n: number,
): Promise<{ msPerConnection: number; serverCpuUsPerConnection: number }> {
  const s0 = await s.server.stats();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const c = await makeClient(opts.client, s.server.address, 1, s.mode === "mTLS" ? clientTls : undefined);
    await c.ready();
    await c.callAsync(METHOD.check, checks[i % checks.length]!);
    c.close();
  }
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const s1 = await s.server.stats();
  const cpuUs = s1.cpuUserUs + s1.cpuSystemUs - s0.cpuUserUs - s0.cpuSystemUs;
  return { msPerConnection: wallMs / n, serverCpuUsPerConnection: cpuUs / n };
}

const sides = [await side("plaintext"), await side("mTLS")];
const results: { round: number; workload: Workload; mode: Mode; run: Run }[] = [];
const connections: {
  round: number;
  mode: Mode;
  msPerConnection: number;
  serverCpuUsPerConnection: number;
}[] = [];
try {
  // Warm-up, both sides, both workloads.
  for (const s of sides) {
    await closedLoop(s.client, METHOD.report, opts.ingestConcurrency, 1.5, nextReport(s));
    await closedLoop(s.client, METHOD.check, opts.checkConcurrency, 1.5, (i) => checks[i % checks.length]!);
  }
  for (let round = 1; round <= opts.rounds; round++) {
    const order = round % 2 === 1 ? sides : [...sides].reverse();
    for (const w of ["ingest", "check"] as const) {
      for (const s of order) {
        const r = await run(s, w, opts.seconds);
        if (r.errors > 0) throw new Error(`${s.mode} ${w}: ${r.errors} errors, first ${r.firstError}`);
        results.push({ round, workload: w, mode: s.mode, run: r });
        console.log(
          `round ${round} ${w.padEnd(6)} ${s.mode.padEnd(9)} ${num(r.unitsPerSec)} ${w === "ingest" ? "entries" : "checks"}/s, ` +
            `p50 ${r.latency.p50Us.toFixed(0)} us, p99 ${r.latency.p99Us.toFixed(0)} us, server CPU ${r.serverCpuUsPerCall.toFixed(1)} us/call`,
        );
      }
    }
    for (const s of order) {
      const c = await newConnections(s, Math.round(opts.connections / opts.rounds));
      connections.push({ round, mode: s.mode, ...c });
    }
  }
} finally {
  for (const s of sides) {
    s.client.close();
    await s.server.stop();
  }
}

const med = (w: Workload, mode: Mode, f: (r: Run) => number) =>
  median(results.filter((x) => x.workload === w && x.mode === mode).map((x) => f(x.run)));
const summary = (["ingest", "check"] as const).map((w) => {
  const plain = {
    unitsPerSec: med(w, "plaintext", (r) => r.unitsPerSec),
    p50Us: med(w, "plaintext", (r) => r.latency.p50Us),
    p99Us: med(w, "plaintext", (r) => r.latency.p99Us),
    serverCpuUsPerCall: med(w, "plaintext", (r) => r.serverCpuUsPerCall),
  };
  const tls = {
    unitsPerSec: med(w, "mTLS", (r) => r.unitsPerSec),
    p50Us: med(w, "mTLS", (r) => r.latency.p50Us),
    p99Us: med(w, "mTLS", (r) => r.latency.p99Us),
    serverCpuUsPerCall: med(w, "mTLS", (r) => r.serverCpuUsPerCall),
  };
  // Each round's mTLS figure over the same round's plaintext one: a drift of the shared
  // machine between rounds cancels out of these.
  const paired = (f: (r: Run) => number) =>
    median(
      Array.from({ length: opts.rounds }, (_, i) => {
        const of = (mode: Mode) =>
          results.find((x) => x.round === i + 1 && x.workload === w && x.mode === mode)!;
        return f(of("mTLS").run) / f(of("plaintext").run);
      }),
    );
  return {
    workload: w,
    plain,
    tls,
    throughputRatio: tls.unitsPerSec / plain.unitsPerSec,
    serverCpuRatio: tls.serverCpuUsPerCall / plain.serverCpuUsPerCall,
    pairedThroughputRatio: paired((r) => r.unitsPerSec),
    pairedServerCpuRatio: paired((r) => r.serverCpuUsPerCall),
  };
});
const conn = (mode: Mode) => ({
  msPerConnection: median(connections.filter((c) => c.mode === mode).map((c) => c.msPerConnection)),
  serverCpuUsPerConnection: median(
    connections.filter((c) => c.mode === mode).map((c) => c.serverCpuUsPerConnection),
  ),
});
const connSummary = { plain: conn("plaintext"), tls: conn("mTLS") };

console.log("\nmedians over rounds (mTLS / plaintext)");
printTable(
  [
    "workload",
    "plain /s",
    "mTLS /s",
    "ratio",
    "plain p50/p99 us",
    "mTLS p50/p99 us",
    "server us/call plain",
    "mTLS",
    "ratio",
  ],
  summary.map((s) => [
    s.workload === "ingest" ? `ingest (${opts.batch}/call), entries` : "Check (1 item), checks",
    num(s.plain.unitsPerSec),
    num(s.tls.unitsPerSec),
    s.throughputRatio.toFixed(3),
    `${s.plain.p50Us.toFixed(0)}/${s.plain.p99Us.toFixed(0)}`,
    `${s.tls.p50Us.toFixed(0)}/${s.tls.p99Us.toFixed(0)}`,
    s.plain.serverCpuUsPerCall.toFixed(1),
    s.tls.serverCpuUsPerCall.toFixed(1),
    s.serverCpuRatio.toFixed(3),
  ]),
);
for (const x of summary) {
  console.log(
    `${x.workload}: median of per-round mTLS/plaintext ratios: throughput ${x.pairedThroughputRatio.toFixed(3)}, server CPU per call ${x.pairedServerCpuRatio.toFixed(3)}`,
  );
}
console.log(
  `\nnew connection + one Check: plaintext ${connSummary.plain.msPerConnection.toFixed(2)} ms ` +
    `(server ${connSummary.plain.serverCpuUsPerConnection.toFixed(0)} us CPU), mTLS ${connSummary.tls.msPerConnection.toFixed(2)} ms ` +
    `(server ${connSummary.tls.serverCpuUsPerConnection.toFixed(0)} us CPU)`,
);
writeResult("tls-cost", {
  machine: m,
  busy,
  options: opts,
  summary,
  connections: connSummary,
  rounds: results.map((r) => ({
    round: r.round,
    workload: r.workload,
    mode: r.mode,
    unitsPerSec: r.run.unitsPerSec,
    p50Us: r.run.latency.p50Us,
    p99Us: r.run.latency.p99Us,
    serverCpuUsPerCall: r.run.serverCpuUsPerCall,
    clientCpuPerWallS: r.run.clientCpuPerWallS,
  })),
  connectionRounds: connections,
});
