/**
 * Where the worst call of a long ShouldRateLimit run comes from (issue 16, the 60 s worst call):
 * shardlimit lean and the do-nothing node:http2 server, each alone in an open loop at one rate on
 * one connection (h2load --rps), each with V8's `--trace-gc` beside the server's heap options. For
 * each: h2load's worst and mean call, and the server's collections over the same run (count and
 * longest pause of scavenges and of mark-compacts, the old generation before and after). A worst
 * call near the longest mark-compact pause is the collector's; one far above every pause is the
 * machine's (or the server's queue behind it). Systems take turns round by round.
 *
 *   npm run build && npx tsx bench/gc-tail.ts [--seconds 60 --rps 3000 --rounds 1 --flags "--heap-growing-percent=50"]
 *     [--serverArgs "--heap-growing-percent 100"]   (serve flags for shardlimit alone)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { HEAP_OPTIONS } from "../src/app/heap.js";
import { grpcFrame } from "../src/protocol/fast-encode.js";
import { BUILT_CLI, ensureBuilt } from "../src/testkit/cli.js";
import { tempDir } from "../src/testkit/temp-dir.js";
import { machine, num, parseArgs, printTable, writeResult } from "./lib/common.js";
import { BENCH_CONFIG, EnvoyRequestType, EnvoyResponseType } from "./lib/wire.js";

const opts = parseArgs({ seconds: 60, rps: 3000, warmup: 3, rounds: 1, flags: "", serverArgs: "" });
const PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
const dir = tempDir("shardlimit-bench-gc-tail-");
/** `--flags "..."`: more node/V8 flags for both systems (e.g. a heap growing factor to try). */
const NODE_FLAGS = [...HEAP_OPTIONS, "--trace-gc", ...opts.flags.split(" ").filter((f) => f !== "")];

const request = EnvoyRequestType.encode({
  domain: "bench",
  descriptors: [{ entries: [{ key: "k", value: "a" }] }, { entries: [{ key: "k", value: "b" }] }],
  hitsAddend: 1,
}).finish();
const bodyFile = path.join(dir, "body.bin");
writeFileSync(bodyFile, grpcFrame(request));
/** The do-nothing server's fixed answer: what shardlimit answers this request. */
const answer = Buffer.from(
  EnvoyResponseType.encode({
    overallCode: 1,
    statuses: [
      { code: 1, currentLimit: { requestsPerUnit: 1_000_000_000, unit: 1 }, limitRemaining: 999_999_999 },
      { code: 1, currentLimit: { requestsPerUnit: 1_000_000_000, unit: 1 }, limitRemaining: 999_999_999 },
    ],
  }).finish(),
);

interface Server {
  child: ChildProcess;
  port: number;
  /** Everything the process printed (its logs and V8's GC trace), as it comes. */
  out: { text: string };
}

/** Starts `args` under node with the heap options and the GC trace; `port` reads the port. */
function start(args: string[], port: (line: string) => number | undefined): Promise<Server> {
  const child = spawn(process.execPath, [...NODE_FLAGS, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  const out = { text: "" };
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${args[0]} exited (${code}) before serving`)));
    child.stdout!.on("data", (d: Buffer) => {
      out.text += d.toString();
      for (const line of out.text.split("\n")) {
        const p = port(line);
        if (p !== undefined) return resolve({ child, port: p, out });
      }
    });
  });
}

const SYSTEMS: Record<string, () => Promise<Server>> = {
  "shardlimit lean": () => {
    const config = path.join(dir, "config.yaml");
    writeFileSync(config, BENCH_CONFIG);
    return start(
      [
        BUILT_CLI,
        "serve",
        ...["--config", config, "--transport", "lean", "--log-level", "info"],
        ...["--grpc-host", "127.0.0.1", "--http-host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"],
        // `--serverArgs "..."`: more serve flags for shardlimit only (e.g. --heap-growing-percent 100).
        ...opts.serverArgs.split(" ").filter((f) => f !== ""),
      ],
      (line) => {
        if (!line.startsWith("{")) return undefined;
        const l = JSON.parse(line) as { msg?: string; grpcPort?: number };
        return l.msg === "shardlimit serving" ? l.grpcPort : undefined;
      },
    );
  },
  "do-nothing node:http2": () =>
    start(
      [
        path.join(path.dirname(BUILT_CLI), "..", "loadtest", "do-nothing.js"),
        "http2",
        JSON.stringify([[PATH, answer.toString("base64")]]),
      ],
      (line) => (/^\d+$/.test(line.trim()) ? Number(line.trim()) : undefined),
    ),
};

/** h2load on one connection: closed (`rps` 0) or open loop; its latency line in ms. */
function h2load(port: number, seconds: number, rps: number): Promise<{ maxMs: number; meanMs: number }> {
  const args = [
    ...["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", bodyFile],
    ...["-t", "1", "-c", "1", "-m", "64", "-D", String(seconds)],
    ...(rps > 0 ? ["--rps", String(rps)] : []),
    `http://127.0.0.1:${port}${PATH}`,
  ];
  return new Promise((resolve, reject) => {
    const p = spawn("h2load", args);
    let out = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.on("error", reject);
    p.on("exit", () => {
      // "time for request:  min  max  mean  sd  +/- sd", each with its unit.
      const m = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
      if (m === null) return reject(new Error(`h2load printed no latencies:\n${out}`));
      resolve({ maxMs: toMs(m[2]!), meanMs: toMs(m[3]!) });
    });
  });
}

function toMs(v: string): number {
  const n = Number.parseFloat(v);
  return v.endsWith("us") ? n / 1000 : v.endsWith("ms") ? n : n * 1000;
}

interface Collections {
  scavenges: number;
  scavengeMaxMs: number;
  markCompacts: number;
  markCompactMaxMs: number;
  /** The old generation at the largest mark-compact, before and after (MB). */
  heapBeforeMb: number;
  heapAfterMb: number;
}

/** V8's `--trace-gc` lines: "Scavenge 10.1 (12.0) -> 9.8 (13.0) MB, 1.23 / 0.00 ms ...". */
function collections(trace: string): Collections {
  const c: Collections = {
    scavenges: 0,
    scavengeMaxMs: 0,
    markCompacts: 0,
    markCompactMaxMs: 0,
    heapBeforeMb: 0,
    heapAfterMb: 0,
  };
  const re = /(Scavenge|Mark-Compact)[^\d]*([\d.]+) \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB, ([\d.]+) \//g;
  for (const m of trace.matchAll(re)) {
    const pause = Number(m[4]);
    if (m[1] === "Scavenge") {
      c.scavenges++;
      c.scavengeMaxMs = Math.max(c.scavengeMaxMs, pause);
    } else {
      c.markCompacts++;
      if (pause >= c.markCompactMaxMs) {
        c.markCompactMaxMs = pause;
        c.heapBeforeMb = Number(m[2]);
        c.heapAfterMb = Number(m[3]);
      }
    }
  }
  return c;
}

ensureBuilt();
const m = machine();
console.log(
  `gc-tail: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}, load average ${m.loadAvg1m.toFixed(2)}\n` +
    `ShouldRateLimit, open loop at ${num(opts.rps)}/s on one connection for ${opts.seconds}s, node ${NODE_FLAGS.join(" ")}\n`,
);
const results: ({ system: string; round: number; maxMs: number; meanMs: number } & Collections)[] = [];
for (let round = 1; round <= opts.rounds; round++) {
  for (const [system, startSystem] of Object.entries(SYSTEMS)) {
    const s = await startSystem();
    try {
      await h2load(s.port, opts.warmup, 0);
      const from = s.out.text.length;
      const calls = await h2load(s.port, opts.seconds, opts.rps);
      const gc = collections(s.out.text.slice(from));
      results.push({ system, round, ...calls, ...gc });
      console.log(
        `round ${round} ${system}: worst call ${calls.maxMs.toFixed(1)} ms, longest mark-compact ${gc.markCompactMaxMs.toFixed(1)} ms`,
      );
    } finally {
      s.child.kill("SIGTERM");
    }
  }
}
console.log("");
printTable(
  [
    "system",
    "round",
    "worst call ms",
    "mean ms",
    "mark-compacts",
    "longest ms",
    "old gen MB before -> after",
    "scavenges",
    "longest ms",
  ],
  results.map((r) => [
    r.system,
    r.round,
    r.maxMs.toFixed(1),
    r.meanMs.toFixed(2),
    r.markCompacts,
    r.markCompactMaxMs.toFixed(1),
    `${r.heapBeforeMb.toFixed(1)} -> ${r.heapAfterMb.toFixed(1)}`,
    r.scavenges,
    r.scavengeMaxMs.toFixed(1),
  ]),
);
writeResult("gc-tail", { machine: m, options: opts, nodeFlags: NODE_FLAGS, results });
