/**
 * The accuracy scenarios over many seeds (arrivals and network jitter), full length: the spread of
 * each scenario's ratio, so one lucky seed is not the figure quoted. Then the same at one seed with
 * network delay and loss.
 *
 *   tsx bench/accuracy-seeds.ts      (npm run bench:accuracy-seeds)
 *
 * Options: --seeds 20
 */

import { runAccuracy, type ScenarioResult } from "../src/sim/accuracy.js";
import { machine, num, parseArgs, printTable, writeResult } from "./lib/common.js";

const opts = parseArgs({ seeds: 20 });
const m = machine();
console.log(`accuracy over ${opts.seeds} seeds: ${m.cpuModel}, node ${m.node}, git ${m.git}\n`);

const t0 = performance.now();
const bySeed: ScenarioResult[][] = [];
for (let seed = 1; seed <= opts.seeds; seed++) bySeed.push(runAccuracy({ quick: false, seed }));
const wall = performance.now() - t0;

const rows = bySeed[0]!.map((first, i) => {
  const rs = bySeed.map((r) => r[i]!);
  const ratios = rs.map((r) => r.ratio);
  const vsIdeal = rs.map((r) => r.admitted / Math.max(1e-9, r.ideal_admitted));
  const dev = rs.map((r) => r.detail?.worst_deviation).filter((d): d is number => typeof d === "number");
  return {
    scenario: first.name,
    target: first.target,
    min: Math.min(...ratios),
    max: Math.max(...ratios),
    passed: rs.filter((r) => r.pass).length,
    vsIdealMin: Math.min(...vsIdeal),
    vsIdealMax: Math.max(...vsIdeal),
    worstShiftDeviation: dev.length ? Math.max(...dev) : undefined,
  };
});
printTable(
  ["scenario", "target", "ratio min", "ratio max", "passed", "vs exact central limiter", "E: worst shift"],
  rows.map((r) => [
    r.scenario.slice(0, 60),
    r.target.slice(0, 14),
    r.min.toFixed(4),
    r.max.toFixed(4),
    `${r.passed}/${opts.seeds}`,
    `${r.vsIdealMin.toFixed(4)}-${r.vsIdealMax.toFixed(4)}`,
    r.worstShiftDeviation === undefined ? "" : `${(r.worstShiftDeviation * 100).toFixed(2)}%`,
  ]),
);
console.log(`\n${opts.seeds} seeds x 7 scenarios in ${num(wall / 1000, 1)} s of wall time`);

const network: { delayMs?: number; loss?: number }[] = [
  {},
  { delayMs: 5, loss: 0 },
  { delayMs: 0.25, loss: 0.01 },
  { delayMs: 5, loss: 0.01 },
  { delayMs: 20, loss: 0.02 },
];
const networkRuns = network.map((n) => ({ ...n, results: runAccuracy({ quick: false, seed: 1, ...n }) }));
console.log("\nseed 1 with network delay (one way, +50% jitter) and loss (each message):\n");
printTable(
  ["delay", "loss", ...bySeed[0]!.map((r) => r.name[0]!)],
  networkRuns.map((n) => [
    n.delayMs === undefined ? "0.25 ms (default)" : `${n.delayMs} ms`,
    `${(n.loss ?? 0) * 100}%`,
    ...n.results.map((r) => `${r.ratio.toFixed(4)}${r.pass ? "" : " (fail)"}`),
  ]),
);
writeResult("accuracy-seeds", { machine: m, opts, rows, network: networkRuns, wallMs: wall });
