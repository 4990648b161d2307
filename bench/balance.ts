/**
 * Load balancing in simulation, with the real placement and rebalancing code: N servers, K keys
 * with Zipf-distributed load, rounds of rebalancing fed the exact per-slice load, then a join and
 * a leave. The baseline is the same run's round 0: consistent hashing alone.
 *
 *   tsx bench/balance.ts      (npm run bench:balance)
 *
 * Options: --servers 20  --keys 1000000  --rounds 6  --zipf "0.8,0.9,0.99,1.1"
 */

import { simulateBalance } from "../src/keyspace/balance-sim.js";
import { machine, parseArgs, printTable, writeResult } from "./lib/common.js";

const opts = parseArgs({ servers: 20, keys: 1_000_000, rounds: 6, zipf: "0.8,0.9,0.99,1.1" });
const m = machine();
console.log(`balance simulation: ${m.cpuModel}, node ${m.node}, git ${m.git}`);
console.log(`${opts.servers} servers, ${opts.keys} keys, ${opts.rounds} rebalancing rounds\n`);

const results = opts.zipf.split(",").map((z) =>
  simulateBalance({
    servers: opts.servers,
    keys: opts.keys,
    zipf: Number(z),
    rounds: opts.rounds,
  }),
);

printTable(
  [
    "zipf",
    "hottest key/mean",
    "floor",
    "hashing only",
    "after 1 round",
    `after ${opts.rounds}`,
    "vs hashing",
    "max churn/round",
    "slices",
    "join moves",
    "after join+2",
    "leave moves",
    "after leave+2",
    "ms",
  ],
  results.map((r) => {
    const last = r.rounds.at(-1)!;
    return [
      String(r.zipf),
      r.hottestKeyOverMean.toFixed(3),
      r.floor.toFixed(3),
      r.rounds[0]!.imbalance.toFixed(3),
      r.rounds[1]!.imbalance.toFixed(3),
      last.imbalance.toFixed(3),
      `${(last.imbalance / r.rounds[0]!.imbalance).toFixed(3)}x`,
      `${(Math.max(...r.rounds.map((x) => x.churn)) * 100).toFixed(2)}%`,
      String(last.slices),
      `${(r.join.churn * 100).toFixed(2)}%`,
      r.join.imbalanceAfterRebalance.toFixed(3),
      `${(r.leave.churn * 100).toFixed(2)}%`,
      r.leave.imbalanceAfterRebalance.toFixed(3),
      String(Math.round(r.ms)),
    ];
  }),
);
writeResult("balance", { machine: m, options: opts, results });
