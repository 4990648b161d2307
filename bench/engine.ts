/**
 * In-process, one thread: what the counting engine and the server's request path cost, against
 * two baselines measured in the same run (a raw Map increment loop, and protobufjs decoding).
 *
 *   node --expose-gc --import tsx bench/engine.ts      (npm run bench:engine)
 *
 * Options: --keys 100000  --batch 500  --rounds 5  --memKeys 1000000  --no-memory
 */

import { compileSources } from "../src/config/load.js";
import type { Algorithm } from "../src/config/types.js";
import { systemClock } from "../src/core/clock.js";
import type { ReportEntry } from "../src/core/decision.js";
import { Engine } from "../src/core/engine.js";
import { type Limit, limitDefaults } from "../src/core/limit.js";
import { DEFAULT_INPUT_LIMITS } from "../src/protocol/input-limits.js";
import type { ReportRequest } from "../src/protocol/messages.js";
import { Limiter } from "../src/server/limiter.js";
import { PromMetrics } from "../src/server/metrics.js";
import { StandaloneOwnership } from "../src/server/ownership.js";
import {
  machine,
  measure,
  num,
  parseArgs,
  printTable,
  ratio,
  shuffled,
  warnIfBusy,
  writeResult,
} from "./lib/common.js";
import {
  BENCH_CONFIG,
  entryFor,
  ReportRequestType,
  ReportResponseType,
  reportBodies,
  reportKey,
  reportRequest,
} from "./lib/wire.js";

const opts = parseArgs({ keys: 100_000, batch: 500, rounds: 5, memKeys: 1_000_000, memory: true });
const m = machine();
const busy = warnIfBusy(m);
console.log(
  `engine benchmark: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}; one thread, in-process`,
);
console.log(`keys ${num(opts.keys)}, report batches of ${opts.batch}, median of ${opts.rounds} rounds\n`);

const KEYS = opts.keys;
const keys = shuffled(
  Array.from({ length: KEYS }, (_, i) => reportKey(i)),
  7,
);
// Each round touches every key several times, so a round is long enough to time well.
const PASSES = Math.max(1, Math.round(1_000_000 / KEYS));
const OPS = KEYS * PASSES;

// (a) Baseline: a Map<string, number> increment per key.
const map = new Map<string, number>();
const mapRate = measure(
  OPS,
  () => {
    for (let p = 0; p < PASSES; p++) {
      for (let i = 0; i < KEYS; i++) {
        const k = keys[i]!;
        map.set(k, (map.get(k) ?? 0) + 1);
      }
    }
    return map.size;
  },
  opts.rounds,
);

// (b) engine.check: one strict decision per call; limits that never bind, so every call admits.
const BIG = 1_000_000_000;
const checkRates: Record<string, { perSec: number; rounds: number[] }> = {};
for (const algorithm of ["token_bucket", "fixed_window", "sliding_window"] as Algorithm[]) {
  const engine = new Engine();
  const l: Limit = limitDefaults({ algorithm, limit: BIG });
  let now = 1_700_000_000_000;
  let allowed = 0;
  checkRates[algorithm] = measure(
    OPS,
    () => {
      for (let p = 0; p < PASSES; p++) {
        for (let i = 0; i < KEYS; i++) {
          // Time moves on 1 ms per 1000 decisions, roughly as it would at 1M decisions/s.
          if ((i & 1023) === 0) now++;
          if (engine.check(keys[i]!, l, 1, now).allowed) allowed++;
        }
      }
      return allowed;
    },
    opts.rounds,
  );
}

// (c) engine.report, batched mode, as the Limiter drives it: one client, acceptReport once per
// batch of `batch` entries, then report() per entry. Keys in chunks, as a gateway would send them.
const BATCH = opts.batch;
const reportChunks: { key: string; entry: ReportEntry }[][] = [];
for (let start = 0; start < KEYS; start += BATCH) {
  const chunk: { key: string; entry: ReportEntry }[] = [];
  for (let i = start; i < Math.min(KEYS, start + BATCH); i++) {
    const e = entryFor(i);
    chunk.push({ key: e.key, entry: e });
  }
  reportChunks.push(chunk);
}
const reportRate = (() => {
  const engine = new Engine();
  const l: Limit = limitDefaults({ algorithm: "token_bucket", limit: BIG });
  let seq = 0;
  let sink = 0;
  return measure(
    OPS,
    () => {
      for (let p = 0; p < PASSES; p++) {
        for (const chunk of reportChunks) {
          const now = Date.now();
          const apply = engine.acceptReport("gw-1", ++seq, now) === "new";
          for (let i = 0; i < chunk.length; i++) {
            const c = chunk[i]!;
            sink += engine.report(c.key, l, "gw-1", c.entry, apply, 100, now).kind;
          }
        }
      }
      return sink;
    },
    opts.rounds,
  );
})();

// (d) Baseline 2: protobufjs decode of 500-entry ReportRequests (the bytes the server receives).
const bodies = reportBodies(KEYS, BATCH);
const clientId = Buffer.from("gw-1");
const wire = bodies.map((b, i) => reportRequest(clientId, i + 1, b));
const decodeRate = measure(
  OPS,
  () => {
    let n = 0;
    for (let p = 0; p < PASSES; p++) {
      for (const b of wire) n += (ReportRequestType.decode(b) as unknown as ReportRequest).entries.length;
    }
    return n;
  },
  opts.rounds,
);

// (e) The Limiter (validation, key resolution with its cache, ownership, engine, policy and
// response objects, metrics) on already-decoded requests; then decode + Limiter + encode.
const config = compileSources([{ file: "bench.yaml", text: BENCH_CONFIG }]);
function newLimiter(): Limiter {
  const engine = new Engine();
  const metrics = new PromMetrics({ counters: () => engine.size, clients: () => 0, ready: () => true });
  return new Limiter({
    engine,
    clock: systemClock,
    config,
    ownership: new StandaloneOwnership("bench"),
    limits: DEFAULT_INPUT_LIMITS,
    metrics,
  });
}
const decoded = wire.map((b) => ReportRequestType.decode(b) as unknown as ReportRequest);
let limiterErrors = 0;
const limiterRate = (() => {
  const limiter = newLimiter();
  let seq = 0;
  return measure(
    OPS,
    () => {
      let n = 0;
      for (let p = 0; p < PASSES; p++) {
        for (const req of decoded) {
          req.seq = ++seq;
          const res = limiter.reportAndGetPolicy(req);
          n += res.policies.length;
          if (res.duplicate || res.policies[0]?.error) limiterErrors++;
        }
      }
      return n;
    },
    opts.rounds,
  );
})();

let responseBytes = 0;
const fullRate = (() => {
  const limiter = newLimiter();
  let seq = 0;
  return measure(
    OPS,
    () => {
      let bytes = 0;
      for (let p = 0; p < PASSES; p++) {
        for (const body of bodies) {
          const req = ReportRequestType.decode(
            reportRequest(clientId, ++seq, body),
          ) as unknown as ReportRequest;
          const res = limiter.reportAndGetPolicy(req);
          bytes += ReportResponseType.encode(res).finish().length;
        }
      }
      responseBytes = bytes / (PASSES * bodies.length);
      return bytes;
    },
    opts.rounds,
  );
})();

// (g) Why the report path costs what it does: a Map.get with a key string fresh off the wire
// (not the object the map was filled with: hashed anew, compared by content, every probe a cache
// miss) against the same look-up with the very string objects the map holds (baseline 1's case).
const lookupMap = new Map<string, number>();
for (let i = 0; i < KEYS; i++) lookupMap.set(reportKey(i), i);
const heldKeys = [...lookupMap.keys()];
function lookupRate(fresh: boolean): { perSec: number; rounds: number[] } {
  const rates: number[] = [];
  let sink = 0;
  for (let round = 0; round <= opts.rounds; round++) {
    let ns = 0n;
    let n = 0;
    for (const b of wire) {
      const entries = fresh
        ? (ReportRequestType.decode(b) as unknown as ReportRequest).entries.map((e) => e.key)
        : heldKeys.slice(n % KEYS, (n % KEYS) + BATCH);
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < entries.length; i++) sink += lookupMap.get(entries[i]!) ?? 0;
      ns += process.hrtime.bigint() - t0;
      n += entries.length;
    }
    if (round > 0) rates.push(n / (Number(ns) / 1e9));
  }
  if (sink < 0) console.log(sink);
  return { perSec: rates.sort((a, b) => a - b)[rates.length >> 1]!, rounds: rates.map(Math.round) };
}
const lookupHeld = lookupRate(false);
const lookupFresh = lookupRate(true);

// (h) The sweeper: the server calls engine.sweep(now, 2_000) every 50 ms on its event loop,
// so one slice is a stall of that length for every call waiting behind it.
const SWEEP_BUDGET = 2_000;
function sweepSlice(batched: boolean): { ms: number[]; perThousandMs: number } {
  const e = new Engine();
  const l = limitDefaults({ algorithm: "token_bucket", limit: BIG });
  const now = Date.now();
  const entry: ReportEntry = { admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 };
  e.acceptReport("gw-1", 1, now);
  for (let i = 0; i < KEYS; i++) {
    if (batched) e.report(keys[i]!, l, "gw-1", entry, true, 100, now);
    else e.check(keys[i]!, l, 1, now);
  }
  const times: number[] = [];
  // 100 ms later: idle token buckets are full again (removable); batched ones keep their client.
  for (let k = 0; k < 2; k++) {
    const t0 = process.hrtime.bigint();
    e.sweep(now + 100, SWEEP_BUDGET);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return {
    ms: times.map((t) => Math.round(t * 100) / 100),
    // The first slice visits min(budget, keys) counters from the start of the table.
    perThousandMs: times[0]! / (Math.min(SWEEP_BUDGET, KEYS) / 1000),
  };
}
const sweepIdle = sweepSlice(false);
const sweepBatched = sweepSlice(true);

// (f) Memory: bytes per counter at memKeys counters, key strings included (the counters' Map
// holds them). Baseline: a Map<string, number> of the same keys.
interface Mem {
  counters: number;
  bytesPerCounter: number;
  keyLength: number;
}
const gc = (globalThis as { gc?: () => void }).gc;
function heapAfterGc(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}
let memory: { mapBaseline: Mem; tokenBucket: Mem; tokenBucketReported: Mem; limiterCheck: Mem } | undefined;
if (opts.memory && !gc) {
  console.log("memory: skipped (run with node --expose-gc --import tsx bench/engine.ts)\n");
} else if (opts.memory) {
  const N = opts.memKeys;
  const keyLength = reportKey(N - 1).length;
  const perKey = (fill: () => unknown): Mem => {
    const before = heapAfterGc();
    const held = fill();
    const after = heapAfterGc();
    if (held === undefined) throw new Error("nothing held");
    return { counters: N, bytesPerCounter: (after - before) / N, keyLength };
  };
  const mapBaseline = perKey(() => {
    const mm = new Map<string, number>();
    for (let i = 0; i < N; i++) mm.set(reportKey(i), 1);
    return mm;
  });
  const tl = limitDefaults({ algorithm: "token_bucket", limit: BIG });
  const now = Date.now();
  const tokenBucket = perKey(() => {
    const e = new Engine({ maxCounters: N });
    for (let i = 0; i < N; i++) e.check(reportKey(i), tl, 1, now);
    if (e.size !== N) throw new Error(`expected ${N} counters, have ${e.size}`);
    return e;
  });
  // Batched mode: each counter also keeps the table of gateways reporting it (here one).
  const entry: ReportEntry = { admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 };
  const tokenBucketReported = perKey(() => {
    const e = new Engine({ maxCounters: N });
    e.acceptReport("gw-1", 1, now);
    for (let i = 0; i < N; i++) e.report(reportKey(i), tl, "gw-1", entry, true, 100, now);
    return e;
  });
  // What a server holds per key: the counter plus the Limiter's key -> rule cache entry.
  const limiterCheck = perKey(() => {
    const limiter = newLimiter();
    for (let i = 0; i < N; i++)
      limiter.check({ items: [{ key: reportKey(i), cost: 1 }], atomic: false, generation: 0 });
    return limiter;
  });
  memory = { mapBaseline, tokenBucket, tokenBucketReported, limiterCheck };
}

const rows: (string | number)[][] = [
  ["Map<string,number> increment (baseline 1)", Math.round(mapRate.perSec), "1.000x", ""],
  ...Object.entries(checkRates).map(([alg, r]) => [
    `engine.check ${alg}`,
    Math.round(r.perSec),
    ratio(r.perSec, mapRate.perSec),
    "of Map increments",
  ]),
  [
    "protobufjs decode, 500-entry ReportRequest (baseline 2)",
    Math.round(decodeRate.perSec),
    "1.000x",
    "entries/s",
  ],
  [
    "engine.report (acceptReport + report), 1 client",
    Math.round(reportRate.perSec),
    ratio(reportRate.perSec, decodeRate.perSec),
    "of decode",
  ],
  [
    "Limiter.reportAndGetPolicy, decoded 500-entry request",
    Math.round(limiterRate.perSec),
    ratio(limiterRate.perSec, decodeRate.perSec),
    "of decode",
  ],
  [
    "decode + Limiter + encode response (server CPU per batch)",
    Math.round(fullRate.perSec),
    ratio(fullRate.perSec, decodeRate.perSec),
    "of decode",
  ],
];
rows.push(
  ["Map.get, the map's own key strings (baseline 3), 100k keys", Math.round(lookupHeld.perSec), "1.000x", ""],
  [
    "Map.get, key strings fresh from protobuf decode, 100k keys",
    Math.round(lookupFresh.perSec),
    ratio(lookupFresh.perSec, lookupHeld.perSec),
    "of baseline 3",
  ],
);
printTable(["operation", "per second", "ratio", "vs"], rows);
console.log(
  "(the Limiter row reuses requests decoded once, so its key strings are the map's own after the first pass;\n" +
    " the decode + Limiter + encode row decodes every time, as the server does)",
);
console.log(
  `\nserver-side CPU per 500-entry batch (no network): ${((1e6 * BATCH) / fullRate.perSec).toFixed(0)} µs; ` +
    `response ${num(responseBytes)} bytes; request ${num(wire[0]!.length)} bytes`,
);
console.log(
  `sweeper: one slice of ${num(SWEEP_BUDGET)} counters (the server's slice, every 50 ms) took ` +
    `${sweepIdle.ms.join(" / ")} ms over idle counters (removed) and ${sweepBatched.ms.join(" / ")} ms over batched ones (kept), ` +
    `~${sweepIdle.perThousandMs.toFixed(2)} / ${sweepBatched.perThousandMs.toFixed(2)} ms per 1,000: an event-loop stall of that length`,
);
if (limiterErrors > 0) console.log(`WARNING: ${limiterErrors} Limiter responses were duplicates or errors`);

if (memory) {
  console.log(
    `\nmemory at ${num(opts.memKeys)} keys (key strings of ~${memory.mapBaseline.keyLength} chars included):`,
  );
  const mb = memory.mapBaseline.bytesPerCounter;
  printTable(
    ["structure", "bytes/key", "ratio vs Map"],
    [
      ["Map<string,number> (baseline)", Math.round(mb), "1.000x"],
      [
        "Engine token_bucket counter (engine.check)",
        Math.round(memory.tokenBucket.bytesPerCounter),
        ratio(memory.tokenBucket.bytesPerCounter, mb),
      ],
      [
        "Engine token_bucket counter, batched (1 reporting client)",
        Math.round(memory.tokenBucketReported.bytesPerCounter),
        ratio(memory.tokenBucketReported.bytesPerCounter, mb),
      ],
      [
        "Limiter.check (counter + key->rule cache entry)",
        Math.round(memory.limiterCheck.bytesPerCounter),
        ratio(memory.limiterCheck.bytesPerCounter, mb),
      ],
    ],
  );
}

writeResult("engine", {
  machine: m,
  busy,
  options: opts,
  units: "operations per second (decisions, increments or report entries); median of rounds",
  mapIncrement: mapRate,
  check: Object.fromEntries(
    Object.entries(checkRates).map(([k, r]) => [k, { ...r, ratioVsMap: r.perSec / mapRate.perSec }]),
  ),
  protobufDecodeEntries: decodeRate,
  engineReportEntries: { ...reportRate, ratioVsDecode: reportRate.perSec / decodeRate.perSec },
  limiterReportEntries: { ...limiterRate, ratioVsDecode: limiterRate.perSec / decodeRate.perSec },
  decodeLimiterEncodeEntries: {
    ...fullRate,
    ratioVsDecode: fullRate.perSec / decodeRate.perSec,
    usPerBatch: (1e6 * BATCH) / fullRate.perSec,
    requestBytes: wire[0]!.length,
    responseBytes,
  },
  sweepSlice: { budget: SWEEP_BUDGET, idleCountersMs: sweepIdle, batchedCountersMs: sweepBatched },
  mapGetHeldKeys: lookupHeld,
  mapGetFreshKeys: { ...lookupFresh, ratioVsHeld: lookupFresh.perSec / lookupHeld.perSec },
  memory: memory && {
    ...memory,
    ratios: {
      tokenBucket: memory.tokenBucket.bytesPerCounter / memory.mapBaseline.bytesPerCounter,
      tokenBucketReported: memory.tokenBucketReported.bytesPerCounter / memory.mapBaseline.bytesPerCounter,
      limiterCheck: memory.limiterCheck.bytesPerCounter / memory.mapBaseline.bytesPerCounter,
    },
  },
});
