/**
 * How much of a synchronous `Check`'s latency is grpc-js: one standalone server answers through
 * its grpc-js server and through a bare node:http2 endpoint on the same Limiter
 * (bench/lib/lean-check-server.ts); one warm load thread each (the lean HTTP/2 client), open loop
 * at the same rate, rounds taking turns after a settle round, pooled.
 *
 *   npm run bench:transport [-- --rate 1000 --rounds 4 --seconds 5]
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { parseArgs } from "node:util";
// Load threads are worker threads that load built modules (npm run bench:transport builds first).
import { type LoadResult, type LoadThreads, poolLoads, startLoad } from "../dist/loadtest/load.js";
import { BENCH_LIMITS } from "../dist/loadtest/stack.js";
import { writeConfig } from "../dist/testkit/serve.js";
import { machine, printTable, ratio, writeResult } from "./lib/common.js";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "1000" },
    rounds: { type: "string", default: "4" },
    seconds: { type: "string", default: "5" },
  },
});
const rate = Number(values.rate);
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);

const child = spawn(
  process.execPath,
  [
    ...process.execArgv,
    path.join(import.meta.dirname, "lib/lean-check-server.ts"),
    writeConfig(BENCH_LIMITS),
  ],
  { stdio: ["ignore", "pipe", "inherit"] },
);
const ports = await new Promise<{ grpc: number; lean: number }>((resolve, reject) => {
  child.stdout.once("data", (d: Buffer) => resolve(JSON.parse(d.toString())));
  child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
});
const systems = [
  { name: "grpc-js server", port: ports.grpc },
  { name: "node:http2, hand-framed", port: ports.lean },
];
const threads: LoadThreads[] = [];
const runs: LoadResult[][] = systems.map(() => []);
try {
  for (const s of systems) {
    threads.push(
      await startLoad({
        threads: 1,
        seconds,
        keys: 10_000,
        ratePerSec: rate,
        warmupSeconds: 3,
        specFor: () => ({ kind: "check-h2", servers: [`127.0.0.1:${s.port}`], route: false }),
      }),
    );
  }
  for (const t of threads) await t.run(); // settle round, not counted
  for (let r = 0; r < rounds; r++) {
    for (const [i, t] of threads.entries()) runs[i]!.push(await t.run());
  }
} finally {
  await Promise.all(threads.map((t) => t.close()));
  child.kill("SIGTERM");
}
const pooled = runs.map((r) => poolLoads(r));
const rows = systems.map((s, i) => {
  const p = pooled[i]!;
  return {
    transport: s.name,
    calls: p.completed,
    errors: p.errors,
    p50_ms: p.latency.p50Us / 1000,
    p99_ms: p.latency.p99Us / 1000,
    service_p50_ms: p.service.p50Us / 1000,
    service_p99_ms: p.service.p99Us / 1000,
  };
});
printTable(
  [
    "transport",
    "calls",
    "errors",
    "p50 ms",
    "p99 ms",
    "send→answer p50",
    "send→answer p99",
    "p99 vs grpc-js",
  ],
  rows.map((r) => [
    r.transport,
    r.calls,
    r.errors,
    r.p50_ms.toFixed(3),
    r.p99_ms.toFixed(3),
    r.service_p50_ms.toFixed(3),
    r.service_p99_ms.toFixed(3),
    ratio(r.p99_ms, rows[0]!.p99_ms),
  ]),
);
writeResult("transport", { machine: machine(), rate, rounds, seconds, rows });
