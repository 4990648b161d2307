import { setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { encodeHistogram } from "../testkit/histogram.js";
import { type OpenLoopOutcome, openLoop } from "../testkit/open-loop.js";
import { PreciseTimer } from "../testkit/precise-timer.js";
import { openWorkload, type WorkloadSpec } from "./workloads.js";

/** What a load thread is told to do. */
export interface WorkerTask {
  spec: WorkloadSpec;
  ratePerSec: number;
  seconds: number;
  keys: number;
  /** A rate that steps: rates[k % rates.length] during step k of everyMs (overrides ratePerSec). */
  rateSteps?: { everyMs: number; rates: number[] };
  /** Run at the same rate this long, unmeasured, before the measured run. */
  warmupSeconds: number;
  /** Keys are drawn in a seeded order per thread. */
  seed: number;
}

/**
 * An open loop's outcome with its histograms encoded, to cross the thread boundary (the send lag
 * stays behind: no report shows it).
 */
export type WorkerResult = Omit<OpenLoopOutcome, "latency" | "service" | "sendLag"> & {
  latency: string;
  service: string;
};

const task = workerData as WorkerTask;
/** Workloads whose figures are latencies of calls to a service: the generator is only the instrument. */
const SYNC_KINDS: ReadonlySet<WorkloadSpec["kind"]> = new Set([
  "shardlimit-check",
  "check",
  "check-h2",
  "envoy",
  "envoy-h2",
]);
if (SYNC_KINDS.has(task.spec.kind)) {
  // On Linux priority is per thread: this raises this load thread (and the timer thread it starts)
  // only, not the servers it measures, so that a wake-up of the generator waiting for a busy CPU
  // does not count as the service's latency. Needs root (or CAP_SYS_NICE); else it stays as is.
  try {
    setPriority(-10);
  } catch {
    // not allowed: measured at normal priority
  }
}
// The gateway client's timers are unref'd and gRPC may not hold the loop open while connecting:
// without a handle of its own the thread could exit with its top-level await still pending.
const keepAlive = setInterval(() => {}, 1000);
const w = await openWorkload(task.spec, task.keys);
// One timer thread for every run of this thread, started before the first: a run then begins
// as soon as it is told to, on the same clock as the caller's events.
const timer = await PreciseTimer.start();
let x = task.seed >>> 0 || 1;
const call = () => {
  // xorshift: a cheap, repeatable key order
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return w.call((x >>> 0) % task.keys);
};
// Warm up (JIT, connections, first policies) at the same rate before anything is measured.
if (task.warmupSeconds > 0)
  await openLoop({ ratePerSec: task.ratePerSec, seconds: task.warmupSeconds, call, timer });
parentPort!.postMessage({ ready: true });
// Each "go" is one measured run; "stop" closes the workload. Runs of one thread share its warm
// JIT, connections and policies.
for (;;) {
  const msg = await new Promise<"go" | "stop">((resolve) => parentPort!.once("message", resolve));
  if (msg === "stop") break;
  const steps = task.rateSteps;
  const out = await openLoop({
    ratePerSec: task.ratePerSec,
    seconds: task.seconds,
    call,
    timer,
    ...(steps
      ? { rateAt: (ms: number) => steps.rates[Math.floor(ms / steps.everyMs) % steps.rates.length]! }
      : {}),
  });
  const { sendLag: _, ...counts } = out;
  const result: WorkerResult = {
    ...counts,
    latency: encodeHistogram(out.latency),
    service: encodeHistogram(out.service),
  };
  parentPort!.postMessage({ result });
}
await w.close();
timer.close();
clearInterval(keepAlive);
