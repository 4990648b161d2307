/**
 * Issue 15 item 4: Envoy's Rate Limit Quota Service through a three-server cluster. Twenty
 * Envoy-like RLQS streams (Envoy's own protos; each applies its assignments as Envoy's filter
 * does and reports every 100 ms), spread over the servers, report one bucket mapped to one limit
 * of 1000/s, each offered 100/s (2000/s in all); admitted over the measured span / the limit.
 *
 *   npm run bench:rlqs -- [--rounds 3] [--seconds 20] [--warmup 5]
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { startStack } from "../src/loadtest/stack.js";
import { RLQS_LIMITS, RLQS_MAPPING, runRlqsLoad } from "../src/testkit/rlqs-load.js";
import { tempDir } from "../src/testkit/temp-dir.js";
import { machine, parseArgs, printTable, writeResult } from "./lib/common.js";

const args = parseArgs({ rounds: 3, seconds: 20, warmup: 5, streams: 20, rate: 100, tag: "" });
const LIMIT = 1000;

const file = path.join(tempDir("shardlimit-rlqs-"), "rlqs.yaml");
writeFileSync(file, RLQS_MAPPING);
const stack = await startStack({ servers: 3, config: RLQS_LIMITS, extraArgs: ["--rlqs-config", file] });
const rows: {
  round: number;
  offeredPerS: number;
  admittedPerS: number;
  ratio: number;
  perStreamMin: number;
  perStreamMax: number;
  maxStepMs: number;
  ended: number;
}[] = [];
try {
  for (let round = 1; round <= args.rounds; round++) {
    const r = await runRlqsLoad({
      addresses: stack.addresses(),
      domain: "envoy",
      // A key of its own each round, so no round starts on another's counter.
      bucket: { name: "api", tenant: `bench-${round}` },
      streams: args.streams,
      ratePerStream: args.rate,
      reportIntervalMs: 100,
      warmupSeconds: args.warmup,
      seconds: args.seconds,
    });
    rows.push({
      round,
      offeredPerS: r.offered / r.seconds,
      admittedPerS: r.admitted / r.seconds,
      ratio: r.admitted / (LIMIT * r.seconds),
      perStreamMin: r.perStreamMin,
      perStreamMax: r.perStreamMax,
      maxStepMs: r.maxStepMs,
      ended: r.ended.length,
    });
  }
} finally {
  await stack.stop();
}
printTable(
  [
    "round",
    "offered/s",
    "admitted/s",
    "admitted/limit",
    "per stream min/s",
    "per stream max/s",
    "streams ended",
  ],
  rows.map((r) => [
    r.round,
    r.offeredPerS.toFixed(0),
    r.admittedPerS.toFixed(1),
    r.ratio.toFixed(4),
    r.perStreamMin.toFixed(1),
    r.perStreamMax.toFixed(1),
    r.maxStepMs.toFixed(0),
    r.ended,
  ]),
);
writeResult(args.tag ? `rlqs-${args.tag}` : "rlqs", { machine: machine(), args, limit: LIMIT, rows });
