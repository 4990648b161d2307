import { writeFileSync } from "node:fs";
import { SingleBar } from "cli-progress";
import { runAccuracy } from "../sim/accuracy.js";
import { renderHtml } from "./html.js";
import { type BenchReport, newReport } from "./report.js";
import type { ScenarioName } from "./scenario-names.js";
import { accuracyCase, crashMidWindow, loopbackCases } from "./scenarios/accuracy-real.js";
import { baseline } from "./scenarios/baseline.js";
import { failover } from "./scenarios/failover.js";
import { scale } from "./scenarios/scale.js";
import { sync } from "./scenarios/sync.js";
import { throughput } from "./scenarios/throughput.js";
import { type Stack, startStack, targetStack } from "./stack.js";

export { SCENARIOS, type ScenarioName } from "./scenario-names.js";

export interface RunOptions {
  scenarios: readonly ScenarioName[];
  quick: boolean;
  servers: number;
  gateways: number;
  /** Seconds per measured run; scenarios scale it down in quick mode. */
  duration: number;
  json?: string;
  html?: string;
  /** Drive an existing cluster (accuracy, throughput, sync) instead of starting one. */
  target?: string[];
  log: (line: string) => void;
}

/**
 * Runs the chosen scenarios one after another on loopback (each starts and stops what it needs),
 * with a progress bar on a terminal, and writes the report as JSON and HTML.
 */
export async function runBench(o: RunOptions): Promise<BenchReport> {
  const report = newReport(o.quick);
  const d = o.quick ? 3 : o.duration;
  const bar = process.stderr.isTTY
    ? new SingleBar({ format: "{bar} {value}/{total} {scenario}" })
    : undefined;
  bar?.start(o.scenarios.length, 0, { scenario: "" });
  // One cluster serves accuracy, throughput, sync and baseline (failover and scale make their own).
  let shared: Stack | undefined = o.target ? targetStack(o.target) : undefined;
  const stack = async () => {
    shared ??= await startStack({ servers: o.servers });
    return shared;
  };
  try {
    for (const [i, name] of o.scenarios.entries()) {
      bar?.update(i, { scenario: name });
      if (!bar) o.log(`== ${name}`);
      const t0 = performance.now();
      switch (name) {
        case "accuracy": {
          // Over loopback, A always; B, C, E, D and F too at full length (G: simulation only).
          const cases = loopbackCases(o.gateways).slice(0, o.quick ? 1 : 5);
          const loopback = [];
          for (const c of cases) {
            loopback.push(
              await accuracyCase(c, {
                servers: o.servers,
                seconds: o.quick ? 4 : 2 * d,
                stack: await stack(),
              }),
            );
          }
          if (!o.quick && !o.target) loopback.push(await crashMidWindow({ gateways: o.gateways }));
          report.accuracy = { simulation: runAccuracy({ quick: o.quick }), loopback };
          break;
        }
        case "throughput":
          report.throughput = await throughput({
            servers: o.servers,
            gateways: o.gateways,
            seconds: d,
            rate: o.quick ? 200_000 : 1_000_000,
            keys: 10_000,
            stack: await stack(),
          });
          break;
        case "sync":
          report.sync = await sync({
            servers: o.servers,
            gateways: 1,
            seconds: o.quick ? 2 : d,
            rates: o.quick ? [500, 2000] : [250, 500, 1000, 2000, 4000, 8000, 16000],
            keys: 10_000,
            stack: await stack(),
          });
          break;
        case "failover":
          report.failover = await failover({
            servers: Math.max(3, o.servers),
            gateways: o.gateways,
            seconds: o.quick ? 5 : Math.max(10, d),
            rollingSeconds: o.quick ? 11 : Math.max(20, 2 * d),
            batchedRate: o.quick ? 10_000 : 50_000,
            syncRate: o.quick ? 200 : 500,
          });
          break;
        case "scale":
          report.scale = await scale({
            maxServers: o.quick ? 2 : Math.max(3, o.servers),
            gateways: o.gateways,
            seconds: o.quick ? 2 : d,
            rate: o.quick ? 100_000 : 500_000,
          });
          break;
        case "baseline":
          report.results = await baseline({
            servers: o.servers,
            threads: o.gateways,
            seconds: o.quick ? 2 : d,
            keys: 10_000,
            batchedRate: o.quick ? 200_000 : 1_000_000,
            redisBatchedRate: o.quick ? 10_000 : 30_000,
            syncRate: o.quick ? 500 : 1000,
            syncSeconds: o.quick ? 2 : 4 * d,
            syncRounds: o.quick ? 1 : 8,
            syncWarmupSeconds: o.quick ? 1 : 3,
            syncSettleRounds: o.quick ? 0 : 1,
            log: o.log,
            stack: await stack(),
          });
          break;
      }
      report.timings[name] = Math.round((performance.now() - t0) / 100) / 10;
      if (!bar) o.log(`   ${name}: ${report.timings[name]} s`);
    }
  } finally {
    if (!o.target) await shared?.stop();
  }
  bar?.update(o.scenarios.length, { scenario: "done" });
  bar?.stop();
  if (o.json) writeFileSync(o.json, `${JSON.stringify(report, null, 2)}\n`);
  if (o.html) writeFileSync(o.html, renderHtml(report));
  return report;
}
