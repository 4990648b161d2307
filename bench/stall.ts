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
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ReportDedup } from "../src/core/dedup.js";
import { Engine } from "../src/core/engine.js";
import { limitDefaults } from "../src/core/limit.js";
import { keyPoint } from "../src/keyspace/hash.js";

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const N = arg("counters", 5_000_000);
const CLIENTS = arg("clients", 100_000);
const jsonAt = process.argv.indexOf("--json");
const JSON_OUT = jsonAt > 0 ? process.argv[jsonAt + 1]! : "bench/out/stall.json";

const T0 = 1_700_000_000_000;
const limit = limitDefaults({ algorithm: "token_bucket", limit: 1_000_000, windowMs: 60_000 });
const engine = new Engine({ maxCounters: N + 1 });

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

console.log(`stall benchmark: ${N.toLocaleString()} counters, ${CLIENTS.toLocaleString()} reporting clients`);
let t = process.hrtime.bigint();
// Half the bucket used: each counter holds state for 30 s, so a move must carry it.
for (let i = 0; i < N; i++) engine.check(`bench/k=${i}`, limit, 500_000, T0);
console.log(
  `filled in ${ms(t).toFixed(0)} ms; heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MB`,
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

// A member joins a 3-server cluster: about a quarter of this server's key space leaves.
t = process.hrtime.bigint();
const taken = engine.takeCounters((shard) => keyPoint(shard) < 2 ** 30, T0 + 1);
row(`takeCounters for 1/4 of the key space (${taken.length.toLocaleString()} taken)`, ms(t), scan);

t = process.hrtime.bigint();
engine.putCounters(taken, T0 + 2);
row(`putCounters of those ${taken.length.toLocaleString()} (a receiver's side)`, ms(t), scan);

// The sweeper's slice (2,000 counters every 50 ms in a server).
t = process.hrtime.bigint();
engine.sweep(T0 + 3, 2_000);
row("sweep, one 2,000-counter slice", ms(t), scan);

// The dedup table's sweep (run by the engine's sweeper at the end of each pass over the
// counters): every client silent past the TTL is forgotten in one go.
const dedup = new ReportDedup();
for (let i = 0; i < CLIENTS; i++) dedup.accept(`gw-${i}`, 1, T0);
t = process.hrtime.bigint();
dedup.sweep(T0 + 1);
row(`dedup sweep forgetting ${CLIENTS.toLocaleString()} silent clients`, ms(t), scan);

mkdirSync(path.dirname(JSON_OUT), { recursive: true });
writeFileSync(JSON_OUT, `${JSON.stringify({ counters: N, clients: CLIENTS, rows }, null, 2)}\n`);
console.log(`wrote ${JSON_OUT}`);
