import { cpus } from "node:os";
import type { ScenarioResult } from "../sim/accuracy.js";
import type { RealAccuracyResult } from "./scenarios/accuracy-real.js";
import type { BaselineRow } from "./scenarios/baseline.js";
import type { FailoverRun } from "./scenarios/failover.js";
import type { ScaleRow } from "./scenarios/scale.js";
import type { SyncResult } from "./scenarios/sync.js";
import type { ThroughputResult } from "./scenarios/throughput.js";

/** Everything one `shardlimit bench` run measured; written as JSON and rendered as HTML. */
export interface BenchReport {
  generated: string;
  machine: { cpus: number; model: string; node: string };
  quick: boolean;
  /** The `baseline` scenario's rows, at the top as its JSON format asks. */
  results?: BaselineRow[];
  throughput?: ThroughputResult;
  sync?: SyncResult;
  accuracy?: { simulation: ScenarioResult[]; loopback: RealAccuracyResult[] };
  failover?: FailoverRun[];
  scale?: ScaleRow[];
  /** Wall seconds per scenario. */
  timings: Record<string, number>;
}

export function newReport(quick: boolean): BenchReport {
  const cpu = cpus();
  return {
    generated: new Date().toISOString(),
    machine: { cpus: cpu.length, model: cpu[0]?.model ?? "unknown", node: process.version },
    quick,
    timings: {},
  };
}
