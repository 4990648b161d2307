/**
 * Event-loop stalls at scale (issue 11, hole 6): how long the engine's whole-table operations
 * hold the one JS thread with N counters, as a server does them on an assignment change (take
 * the counters of the slices that left, hashing every shard key to find them) and as its
 * sweeper and dedup sweep run. Gateways time out at 200 ms, so anything near that is an outage.
 *
 *   npm run bench:stall -- [--counters 5000000] [--clients 100000] [--json bench/out/stall.json]
 *
 * Baseline in the same run: one pass over a Map of the same size doing nothing but reading
 * (the least any full scan costs).
 *
 * Then the same with the engine as a cluster server builds it (counters indexed by key-space
 * bucket, `pointOf: keyPoint`) and the real Handoff's take-and-send path: a quarter of the key
 * space handed to a fake peer that decodes each chunk and puts it into a receiving engine (sender
 * and receiver in one process, so a turn holds both sides' work: an upper bound). A setImmediate
 * ticker times every turn of the event loop meanwhile; the longest is the stall gateways see.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import v8 from "node:v8";
import vm from "node:vm";
import { pino } from "pino";
import { ClusterOwnership } from "../src/cluster/cluster-ownership.js";
import { Handoff } from "../src/cluster/handoff.js";
import type { PeerRpc } from "../src/cluster/peers.js";
import { warmUpHandoff } from "../src/cluster/warm-up.js";
import { ManualClock } from "../src/core/clock.js";
import { ReportDedup } from "../src/core/dedup.js";
import { Engine } from "../src/core/engine.js";
import { limitDefaults } from "../src/core/limit.js";
import type { CounterSnapshot } from "../src/core/transfer.js";
import { keyPoint } from "../src/keyspace/hash.js";
import type { HandoffRequest } from "../src/protocol/messages.js";
import { root } from "../src/protocol/proto.js";

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const N = arg("counters", 5_000_000);
const CLIENTS = arg("clients", 100_000);
const jsonAt = process.argv.indexOf("--json");
const JSON_OUT = jsonAt > 0 ? process.argv[jsonAt + 1]! : "bench/out/stall.json";

const T0 = 1_700_000_000_000;
// A full collection on demand: the first half's garbage (the old table, its snapshots) is not
// left to be collected in the middle of the second half's measurement.
v8.setFlagsFromString("--expose-gc");
const fullGc = vm.runInNewContext("gc") as () => void;
const limit = limitDefaults({ algorithm: "token_bucket", limit: 1_000_000, windowMs: 60_000 });
let engine = new Engine({ maxCounters: N + 1 });

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
/**
 * The main thread's own CPU time (Linux: /proc/thread-self/schedstat, ns on a CPU): on a shared
 * machine a turn's wall time includes waiting for a CPU, which is not the code's doing.
 */
const threadCpuMs = (): number => {
  try {
    return Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[0]) / 1e6;
  } catch {
    return Number.NaN;
  }
};

console.log(`stall benchmark: ${N.toLocaleString()} counters, ${CLIENTS.toLocaleString()} reporting clients`);
let t = process.hrtime.bigint();
// Half the bucket used: each counter holds state for 30 s, so a move must carry it.
// The longest single insertion: when the table's Map outgrows its hash table it rehashes every
// entry in one go (a stall of the traffic path, not the handoff's).
let longestInsert = 0;
let longestAt = 0;
// GC pauses while filling, to tell a collection (or the VM taking the CPU away) from a rehash.
let fillGcLongest = 0;
const fillGc = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) fillGcLongest = Math.max(fillGcLongest, e.duration);
});
fillGc.observe({ entryTypes: ["gc"] });
for (let i = 0; i < N; i++) {
  const t1 = process.hrtime.bigint();
  engine.check(`bench/k=${i}`, limit, 500_000, T0);
  const took = Number(process.hrtime.bigint() - t1) / 1e6;
  if (took > longestInsert) {
    longestInsert = took;
    longestAt = i;
  }
}
await new Promise((r) => setTimeout(r, 100)); // the observer's entries are delivered
fillGc.disconnect();
console.log(
  `filled in ${ms(t).toFixed(0)} ms; heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MB`,
);

fullGc();
console.log(
  `after a full GC: heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MB (engine without index)`,
);

const rows: { operation: string; ms: number; ratio_vs_scan: number }[] = [];
function row(operation: string, took: number, scan: number) {
  rows.push({
    operation,
    ms: Math.round(took * 10) / 10,
    ratio_vs_scan: Math.round((took / scan) * 100) / 100,
  });
  console.log(`${operation.padEnd(70)} ${took.toFixed(1).padStart(9)} ms  ${(took / scan).toFixed(2)}x`);
}

// Baseline: the cheapest full pass over a table this size.
const plain = new Map<string, number>();
for (let i = 0; i < N; i++) plain.set(`bench/k=${i}`, i);
t = process.hrtime.bigint();
let sum = 0;
for (const v of plain.values()) sum += v;
const scan = ms(t);
plain.clear();
console.log(`(checksum ${sum})`);
row("baseline: one pass over a Map of the same size", scan, scan);
row(
  `longest single new counter while filling (at ${longestAt.toLocaleString()} counters)`,
  longestInsert,
  scan,
);
row("  the longest GC pause while filling", fillGcLongest, scan);

// A member joins a 3-server cluster: about a quarter of this server's key space leaves.
t = process.hrtime.bigint();
let taken = engine.takeCounters((shard) => keyPoint(shard) < 2 ** 30, T0 + 1);
row(`takeCounters for 1/4 of the key space (${taken.length.toLocaleString()} taken)`, ms(t), scan);

t = process.hrtime.bigint();
engine.putCounters(taken, T0 + 2);
row(`putCounters of those ${taken.length.toLocaleString()} (a receiver's side)`, ms(t), scan);

// The sweeper's slice (2,000 counters every 50 ms in a server).
t = process.hrtime.bigint();
engine.sweep(T0 + 3, 2_000);
row("sweep, one 2,000-counter slice", ms(t), scan);

// The dedup table's sweep, old style (run by the engine's sweeper at the end of each pass over the
// counters): every client silent past the TTL is forgotten in one go.
const dedup = new ReportDedup();
for (let i = 0; i < CLIENTS; i++) dedup.accept(`gw-${i}`, 1, T0);
t = process.hrtime.bigint();
dedup.sweep(T0 + 1);
row(`dedup sweep forgetting ${CLIENTS.toLocaleString()} silent clients`, ms(t), scan);

// A sweeper slice of the dedup table as the engine runs it now (the sweeper's 2,000 budget).
for (let i = 0; i < CLIENTS; i++) dedup.accept(`gw-${i}`, 1, T0);
let longestDedup = 0;
for (let done = false; !done; ) {
  t = process.hrtime.bigint();
  done = dedup.sweepSlice(T0 + 1, 2_000).done;
  longestDedup = Math.max(longestDedup, ms(t));
}
row(`dedup sweep in 2,000-client slices: longest slice`, longestDedup, scan);

// ---- After: the indexed engine and the real handoff path, one slice per turn. ----
engine = new Engine({ maxCounters: 1 }); // let the old table go first
taken = [];
fullGc();
const indexed = new Engine({ maxCounters: N + 1, pointOf: keyPoint });
t = process.hrtime.bigint();
for (let i = 0; i < N; i++) indexed.check(`bench/k=${i}`, limit, 500_000, T0);
console.log(
  `indexed engine filled in ${ms(t).toFixed(0)} ms; heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MB`,
);

const receiver = new Engine({ maxCounters: N + 1, pointOf: keyPoint });
const HandoffRequestType = root.lookupType("shardlimit.v1.HandoffRequest");
let handed = 0;
let chunks = 0;
/** The receiving side's longest call (its own turn, in a real cluster). */
let receiverLongest = 0;
let receiverLongestCpu = 0;
const peer: Pick<PeerRpc, "handoff"> = {
  handoff: async (req) => {
    const t0 = process.hrtime.bigint();
    const cpu0 = threadCpuMs();
    // The wire both ways, the receiver's ownership check (a hash per counter) and its put.
    const bytes = HandoffRequestType.encode(req).finish();
    const got = HandoffRequestType.toObject(HandoffRequestType.decode(bytes), {
      longs: Number,
      defaults: true,
      arrays: true,
    }) as HandoffRequest;
    const mine: CounterSnapshot[] = got.counters.filter((c) => keyPoint(c.shard || c.key) < 2 ** 30);
    handed += receiver.putCounters(mine, T0 + 2);
    chunks++;
    receiverLongest = Math.max(receiverLongest, ms(t0));
    receiverLongestCpu = Math.max(receiverLongestCpu, threadCpuMs() - cpu0);
    return { accepted: mine.length, generation: 2 };
  },
};
// The counters' time (T0), not the machine's: no retries happen, so the clock need not move.
const clock = new ManualClock(T0 + 1);
const handoff = new Handoff({
  selfId: "a",
  store: indexed,
  ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
  peer: () => peer,
  clock,
  log: pino({ level: "silent" }),
});
const member = (id: string) => ({ id, address: `${id}:1` });
// A cluster server warms its handoff path before it joins (src/cluster/warm-up.ts, called by
// app/serve.ts); so does this process, as the server would have. `--cold` leaves it out, to
// measure a first handoff on cold code as before.
if (!process.argv.includes("--cold")) {
  const w = await warmUpHandoff();
  console.log(`handoff path warmed up as serve does: ${w.counters} counters in ${w.ms.toFixed(0)} ms`);
}
// Warm-up of the setup only: the same path once on a small engine. Its counters (cost 1 of 1M) are
// as good as new by now, so none is worth a snapshot and it sends one empty chunk: the handoff
// measured below is the process's first with real counters (cold encode, decode and put), as a
// server's first rebalance is.
{
  const small = new Engine({ pointOf: keyPoint });
  for (let i = 0; i < 20_000; i++) small.check(`warm/k=${i}`, limit, 1, T0);
  await new Handoff({
    selfId: "a",
    store: small,
    ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
    peer: () => peer,
    clock,
    log: pino({ level: "silent" }),
  }).send({
    generation: 2,
    lost: [{ start: 0, end: 2 ** 32, from: member("a"), to: member("b") }],
    gained: [],
    pending: [],
    orphaned: [],
  });
  handed = 0;
  chunks = 0;
  receiverLongest = 0;
  receiverLongestCpu = 0;
}
fullGc();
console.log(
  `after a full GC: heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MB (indexed engine and receiver)`,
);
// GC pauses meanwhile (young-generation scavenges copy the snapshots and counters still alive).
let gcLongest = 0;
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcLongest = Math.max(gcLongest, e.duration);
});
gcObserver.observe({ entryTypes: ["gc"] });
const turns: number[] = [];
const cpuTurns: number[] = [];
let ticking = true;
let last = process.hrtime.bigint();
let lastCpu = threadCpuMs();
const tick = () => {
  const now = process.hrtime.bigint();
  const cpu = threadCpuMs();
  turns.push(Number(now - last) / 1e6);
  cpuTurns.push(cpu - lastCpu);
  last = now;
  lastCpu = cpu;
  if (ticking) setImmediate(tick);
};
setImmediate(tick);
t = process.hrtime.bigint();
await handoff.send({
  generation: 2,
  lost: [{ start: 0, end: 2 ** 30, from: member("a"), to: member("b") }],
  gained: [],
  pending: [],
  orphaned: [],
});
const total = ms(t);
ticking = false;
await new Promise((r) => setImmediate(r));
gcObserver.disconnect();
const order = turns.map((x, i) => [x, i] as const).sort((a, b) => b[0] - a[0]);
console.log(
  `longest turns at (index of ${turns.length}), wall/main-thread CPU ms: ${order
    .slice(0, 5)
    .map(([x, i]) => `${x.toFixed(1)}/${cpuTurns[i]!.toFixed(1)}@${i}`)
    .join(", ")}`,
);
const cpuOrder = cpuTurns.map((x, i) => [x, i] as const).sort((a, b) => b[0] - a[0]);
console.log(
  `longest turns by main-thread CPU, CPU/wall ms: ${cpuOrder
    .slice(0, 5)
    .map(([x, i]) => `${x.toFixed(1)}/${turns[i]!.toFixed(1)}@${i}`)
    .join(", ")}`,
);
const longestCpu = cpuOrder[0]![0];
turns.sort((a, b) => a - b);
const longest = turns[turns.length - 1]!;
const p99 = turns[Math.floor(turns.length * 0.99)]!;
console.log(
  `longest turns (ms): ${turns
    .slice(-5)
    .map((x) => x.toFixed(1))
    .join(", ")}`,
);
console.log(
  `handoff of ${handed.toLocaleString()} counters in ${chunks.toLocaleString()} chunks over ${turns.length.toLocaleString()} turns, ${total.toFixed(0)} ms in all`,
);
row(`Handoff take+send+receive of 1/4 (${handed.toLocaleString()}), total (not one turn)`, total, scan);
row("  its longest event-loop turn", longest, scan);
row("  its p99 event-loop turn", p99, scan);
row("  its longest turn in main-thread CPU time (no waiting for a CPU)", longestCpu, scan);
// The first turns run the process's first real snapshots, encodes, decodes and puts: cold code
// unless the handoff path was warmed up (the default; --cold leaves it out).
row("  its longest of the first 30 turns, main-thread CPU", Math.max(...cpuTurns.slice(0, 30)), scan);
row("  of which the receiver's longest call (decode, ownership, putCounters)", receiverLongest, scan);
row("  the receiver's longest call in main-thread CPU time", receiverLongestCpu, scan);
row("  the longest GC pause meanwhile", gcLongest, scan);

// The floor this machine sets: the longest turn of an event loop doing nothing but the ticker, for
// as long as the handoff took (a shared VM: other processes take the CPU away now and then).
{
  let idleLongest = 0;
  let prev = process.hrtime.bigint();
  const until = prev + BigInt(Math.round(total * 1e6));
  await new Promise<void>((resolve) => {
    const idle = () => {
      const now = process.hrtime.bigint();
      idleLongest = Math.max(idleLongest, Number(now - prev) / 1e6);
      prev = now;
      if (now < until) setImmediate(idle);
      else resolve();
    };
    setImmediate(idle);
  });
  row("  floor: the longest turn of an idle event loop as long", idleLongest, scan);
}

// The sweeper's slice on the indexed engine.
t = process.hrtime.bigint();
indexed.sweep(T0 + 3, 2_000);
row("sweep, one 2,000-counter slice (indexed engine)", ms(t), scan);

mkdirSync(path.dirname(JSON_OUT), { recursive: true });
writeFileSync(JSON_OUT, `${JSON.stringify({ counters: N, clients: CLIENTS, rows }, null, 2)}\n`);
console.log(`wrote ${JSON_OUT}`);
