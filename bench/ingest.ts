/**
 * Batched ingest on one thread, in-process (issue 16): `ReportAndGetPolicy` from the request's
 * encoded bytes to every entry counted and the response encoded, exactly as the server's handler
 * does it (the service definition's deserializer, `Limiter.reportAndGetPolicy`, its serializer),
 * against protobufjs decoding the same bytes alone. The two take turns round by round, so the ratio
 * holds on a shared machine even when the absolute figures move.
 *
 *   npm run bench:ingest [-- --keys 100000 --batch 500 --rounds 7 --profile]   (builds dist/ first)
 *   npm run bench:ingest -- --before /tmp/old/dist   (another build's handler path in the same rounds)
 *   npm run bench:ingest -- --cluster   (ownership as a cluster member checks it: each key's slice)
 *   npm run bench:ingest -- --order shuffled   (keys in a fixed random order, not the creation order)
 *
 * Each round sends every body at least once and at least 200 requests (small key sets repeat).
 * Requests name keys by handle (as gateways do once the server issued them); a second pair of
 * rows repeats it with string keys. `--profile` runs the handler path under the sampling CPU
 * profiler afterwards and prints the top functions; `--alloc` under the sampling heap profiler
 * keeping every sample (young ones too): bytes allocated per entry, and where. `--before DIR`
 * loads a second Limiter from another build (an older commit's `dist/`, with `proto/` beside it),
 * fed the same requests, and times its handler path in the same rounds, taking turns with the
 * others: before/after in one process, at the same load.
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import path from "node:path";
import type { ReportRequest, ReportResponse } from "../src/protocol/messages.js";
import { allocatedPer } from "./lib/alloc.js";
import {
  machine,
  nowNs,
  num,
  OUT_DIR,
  parseArgs,
  printTable,
  secondsSince,
  shuffled,
  writeResult,
} from "./lib/common.js";
import { type HeapSummary, printProfile, summarizeProfile } from "./lib/cpuprofile.js";
import { distLimiter } from "./lib/dist-limiter.js";
import {
  handleBodies,
  ReportRequestType,
  ReportResponseType,
  reportBodies,
  reportRequest,
} from "./lib/wire.js";

const opts = parseArgs({
  keys: 100_000,
  batch: 500,
  rounds: 7,
  profile: false,
  profileSeconds: 4,
  alloc: false,
  before: "",
  cluster: false,
  order: "created",
});
if (opts.order !== "created" && opts.order !== "shuffled")
  throw new Error(`--order is created or shuffled, got ${JSON.stringify(opts.order)}`);
/**
 * The keys' order in the timed requests: as the server created their counters (the first string
 * reports), or `shuffled` (a fixed permutation), as another gateway's map would list them.
 */
const order = opts.order === "shuffled" ? shuffled([...Array(opts.keys).keys()], 7) : undefined;
const m = machine();
console.log(
  `ingest benchmark: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}, load average ${m.loadAvg1m.toFixed(2)}\n` +
    `one thread, in-process${opts.cluster ? ", as a cluster member" : ""}; ${num(opts.keys)} keys in batches of ${opts.batch} (${opts.order} order), ${opts.rounds} rounds each, taking turns\n`,
);

const { engine, report: handle } = await distLimiter(undefined, undefined, opts.cluster);
const before = opts.before === "" ? undefined : await distLimiter(undefined, opts.before, opts.cluster);
const clientId = Buffer.from("bench-gw-1");
let seq = 0;

// The gateway's way: every key by string once, then by the handles the server answered.
const stringBodies = reportBodies(opts.keys, opts.batch);
function learn(h: (b: Buffer) => Buffer): ReportResponse[] {
  const learned = stringBodies.map(
    (b) => ReportResponseType.decode(h(reportRequest(clientId, ++seq, b))) as unknown as ReportResponse,
  );
  for (const r of learned) {
    const bad = r.policies.filter((p) => p.error !== undefined && p.error !== null).length;
    if (bad > 0 || r.duplicate) throw new Error(`sanity: ${bad} item errors, duplicate ${r.duplicate}`);
  }
  return learned;
}
const learned = learn(handle);
// Each build's own handles (its key table has its own epoch): the same keys and counts.
const beforeByHandle =
  before === undefined ? undefined : handleBodies(learn(before.report), opts.batch, 100, order);
const byHandle = handleBodies(learned, opts.batch, 100, order);
/** The timed string requests: the learning ones, or the same keys in `order`. */
const timedStrings = order === undefined ? stringBodies : reportBodies(opts.keys, opts.batch, 100, order);
/** Throws unless a handle request is answered without an item error (e.g. a handle of another table). */
function answersClean(h: (b: Buffer) => Buffer, body: Buffer): void {
  const r = ReportResponseType.decode(h(reportRequest(clientId, ++seq, body))) as unknown as ReportResponse;
  const bad = r.policies.filter((p) => p.error !== undefined && p.error !== null);
  if (bad.length > 0) throw new Error(`sanity: ${bad.length} item errors, first ${JSON.stringify(bad[0])}`);
}
answersClean(handle, byHandle[0]!);
if (before !== undefined) answersClean(before.report, beforeByHandle![0]!);
console.log(`${num(engine.size)} counters; a handle request is ${num(byHandle[0]!.length)} bytes\n`);

/**
 * Requests with fresh seqs, built before timing (a real server gets them from the socket).
 * A round sends every body at least once and at least 200 requests in all (a small key set's few
 * bodies, sent again and again): a round of a few calls is too short to time.
 */
const MIN_ROUND_REQUESTS = 200;
const requests = (bodies: Buffer[]) => {
  const passes = Math.max(1, Math.ceil(MIN_ROUND_REQUESTS / bodies.length));
  const out: Buffer[] = [];
  for (let p = 0; p < passes; p++) for (const b of bodies) out.push(reportRequest(clientId, ++seq, b));
  return out;
};

function timeRound(
  bytes: Buffer[],
  fn: (b: Buffer) => number,
): { n: number; perSec: number; cpuPerSec: number } {
  let n = 0;
  const cpu0 = process.cpuUsage();
  const t0 = nowNs();
  for (const b of bytes) n += fn(b);
  const s = secondsSince(t0);
  const cpu = process.cpuUsage(cpu0);
  return { n, perSec: n / s, cpuPerSec: n / ((cpu.user + cpu.system) / 1e6) };
}

const decodeOnly = (b: Buffer) => (ReportRequestType.decode(b) as unknown as ReportRequest).entries.length;
let responseBytes = 0;
const handlerPath = (b: Buffer) => {
  responseBytes = handle(b).length;
  return opts.batch;
};
const beforePath = (b: Buffer) => {
  before!.report(b);
  return opts.batch;
};

interface Row {
  keys: string;
  decodePerSec: number;
  handlerPerSec: number;
  ratio: number;
  /** The same per CPU-second of this thread: steadier than wall time on a shared machine. */
  decodePerCpuSec: number;
  handlerPerCpuSec: number;
  cpuRatio: number;
  rounds: number[];
  /** With `--before`: the other build's handler path, per CPU-second, and its ratio to decode. */
  beforePerCpuSec?: number;
  beforeCpuRatio?: number;
  /** This build's handler path per CPU-second in each round (best, median), and the other's. */
  cpuRounds: number[];
  beforeCpuRounds?: number[];
  /** With `--before`: the other build's handler path, entries/s of wall time, each round. */
  beforeRounds?: number[];
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
function pair(label: string, bodies: Buffer[], beforeBodies = bodies): Row {
  const dec: number[] = [];
  const hand: number[] = [];
  const ratios: number[] = [];
  const decCpu: number[] = [];
  const handCpu: number[] = [];
  const cpuRatios: number[] = [];
  const beforeCpu: number[] = [];
  const beforeWall: number[] = [];
  const beforeRatios: number[] = [];
  for (let r = 0; r <= opts.rounds; r++) {
    const d = timeRound(requests(bodies), decodeOnly);
    const b = before === undefined ? undefined : timeRound(requests(beforeBodies), beforePath);
    const h = timeRound(requests(bodies), handlerPath);
    if (r === 0) continue; // warm-up
    if (b !== undefined) {
      beforeCpu.push(b.cpuPerSec);
      beforeWall.push(b.perSec);
      beforeRatios.push(b.cpuPerSec / d.cpuPerSec);
    }
    dec.push(d.perSec);
    hand.push(h.perSec);
    ratios.push(h.perSec / d.perSec);
    decCpu.push(d.cpuPerSec);
    handCpu.push(h.cpuPerSec);
    cpuRatios.push(h.cpuPerSec / d.cpuPerSec);
  }
  return {
    keys: label,
    decodePerSec: med(dec),
    handlerPerSec: med(hand),
    ratio: med(ratios),
    decodePerCpuSec: med(decCpu),
    handlerPerCpuSec: med(handCpu),
    cpuRatio: med(cpuRatios),
    rounds: hand.map(Math.round),
    cpuRounds: handCpu.map(Math.round),
    ...(before === undefined
      ? {}
      : {
          beforePerCpuSec: med(beforeCpu),
          beforeCpuRatio: med(beforeRatios),
          beforeCpuRounds: beforeCpu.map(Math.round),
          beforeRounds: beforeWall.map(Math.round),
        }),
  };
}

const rows = [pair("handles", byHandle, beforeByHandle), pair("strings", timedStrings)];
printTable(
  [
    "keys by",
    "decode alone, entries/s",
    "handler path, entries/s",
    "ratio",
    "decode alone, entries/CPU-s",
    "handler path, entries/CPU-s",
    "ratio (CPU)",
  ],
  rows.map((r) => [
    r.keys,
    num(r.decodePerSec),
    num(r.handlerPerSec),
    `${r.ratio.toFixed(3)}x`,
    num(r.decodePerCpuSec),
    num(r.handlerPerCpuSec),
    `${r.cpuRatio.toFixed(3)}x`,
  ]),
);
const best = (xs: number[]) => Math.max(...xs);
// Per CPU-second counts the whole process: with --before, the other build's garbage collected
// on helper threads during this build's rounds is charged to it (and the reverse). The best wall
// round is the one least disturbed by the machine; both are shown.
console.log("\nhandler path, best / median of the rounds, entries per CPU-second and per wall second:");
printTable(
  [
    "keys by",
    "this build, CPU-s",
    "ratio (CPU)",
    "wall",
    ...(before === undefined
      ? []
      : ["--before build, CPU-s", "ratio (CPU)", "wall", "this / before (best wall)"]),
  ],
  rows.map((r) => [
    r.keys,
    `${num(best(r.cpuRounds))} / ${num(r.handlerPerCpuSec)}`,
    `${r.cpuRatio.toFixed(3)}x`,
    `${num(best(r.rounds))} / ${num(r.handlerPerSec)}`,
    ...(before === undefined
      ? []
      : [
          `${num(best(r.beforeCpuRounds!))} / ${num(r.beforePerCpuSec!)}`,
          `${r.beforeCpuRatio!.toFixed(3)}x`,
          `${num(best(r.beforeRounds!))} / ${num(med(r.beforeRounds!))}`,
          `${(best(r.rounds) / best(r.beforeRounds!)).toFixed(2)}x`,
        ]),
  ]),
);
const main = rows[0]!;
console.log(
  "\n(decode alone: protobufjs decoding the request bytes; handler path: decode + count + answer + encode, " +
    "as the server's handler; medians of alternating rounds)\n" +
    `target >= 2,000,000 entries/s on one thread: ${main.handlerPerSec >= 2e6 ? "MET" : "NOT MET"} ` +
    `(${num(main.handlerPerSec)} entries/s, ${main.ratio.toFixed(3)}x of decode alone; ` +
    `${num(main.handlerPerCpuSec)} per CPU-second, ${main.cpuRatio.toFixed(3)}x); response ${responseBytes} bytes`,
);

let profile: ReturnType<typeof summarizeProfile> | undefined;
if (opts.profile) {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 100 });
  await session.post("Profiler.start");
  const t0 = nowNs();
  // With --before, both builds' handler paths take turns (their code is told apart by its path).
  while (secondsSince(t0) < opts.profileSeconds) {
    timeRound(requests(byHandle), handlerPath);
    if (before !== undefined) timeRound(requests(beforeByHandle!), beforePath);
  }
  const { profile: p } = await session.post("Profiler.stop");
  session.disconnect();
  mkdirSync(path.join(OUT_DIR, "prof"), { recursive: true });
  const file = path.join(OUT_DIR, "prof", `ingest-${Date.now()}.cpuprofile`);
  writeFileSync(file, JSON.stringify(p));
  profile = summarizeProfile(file);
  printProfile(profile);
}

let alloc: { bytesPerEntry: number; top: HeapSummary["top"] } | undefined;
if (opts.alloc) {
  const batches = requests(byHandle);
  const a = await allocatedPer("ingest", () => timeRound(batches, handlerPath).n);
  alloc = { bytesPerEntry: a.bytesPerOp, top: a.heap.top };
  console.log(
    `\nallocated on the handler path (every object, young ones too): ${alloc.bytesPerEntry.toFixed(0)} bytes per entry, ` +
      `${num((alloc.bytesPerEntry * opts.batch) / 1024, 1)} KiB per ${opts.batch}-entry call; by allocating stack:`,
  );
  printTable(
    ["MB", "%", "allocated at (innermost first)"],
    a.heap.top.map((t) => [t.mb.toFixed(1), `${t.pct.toFixed(1)}%`, t.stack]),
  );
}

writeResult("ingest", { machine: m, options: opts, rows, responseBytes, profile, alloc });
