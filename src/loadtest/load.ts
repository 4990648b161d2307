import { Worker } from "node:worker_threads";
import { decodeHistogram, type LatencySummary, latencyHistogram, summarize } from "./histogram.js";
import type { WorkerResult, WorkerTask } from "./worker.js";
import type { WorkloadSpec } from "./workloads.js";

export interface LoadResult {
  threads: number;
  targetPerSec: number;
  sent: number;
  completed: number;
  errors: number;
  firstError: string | undefined;
  achievedPerSec: number;
  latency: LatencySummary;
  /** Send to answer, without the schedule's own lateness. */
  service: LatencySummary;
  /** Completed and failed decisions per 100 ms, all threads together. */
  okPer100ms: number[];
  errPer100ms: number[];
  /** Decisions that admitted, all threads, per 100 ms; and in all. */
  admittedPer100ms: number[];
  offeredUnitsPer100ms: number[];
  admitted: number;
  wallSeconds: number;
}

const WORKER = new URL(`./worker.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url);

/**
 * Runs `threads` load threads, each an open loop at `ratePerSec / threads`, all started together
 * once every one has connected. `specFor(i)` says what thread i drives.
 */
export async function runLoad(opts: {
  threads: number;
  ratePerSec: number;
  seconds: number;
  keys: number;
  specFor: (thread: number) => WorkloadSpec;
  /** Thread i's share of `ratePerSec` (default: equal shares). */
  shareFor?: (thread: number) => number;
  /** Thread i's stepping rate, instead of a share of `ratePerSec`. */
  stepsFor?: (thread: number) => { everyMs: number; rates: number[] } | undefined;
  /** Unmeasured run at the same rate first (default 1 s). */
  warmupSeconds?: number;
  /** Called when every thread is warmed up, just before the measured run starts. */
  onStart?: () => void;
  /** Called every 100 ms of the measured run (progress, failure injection). */
  onTick?: (elapsedMs: number) => void;
}): Promise<LoadResult> {
  const workers = Array.from({ length: opts.threads }, (_, i) => {
    const task: WorkerTask = {
      spec: opts.specFor(i),
      ratePerSec: opts.ratePerSec * (opts.shareFor ? opts.shareFor(i) : 1 / opts.threads),
      seconds: opts.seconds,
      keys: opts.keys,
      warmupSeconds: opts.warmupSeconds ?? 1,
      ...(opts.stepsFor?.(i) ? { rateSteps: opts.stepsFor(i) } : {}),
      seed: 7919 * (i + 1),
    };
    return new Worker(WORKER, { workerData: task, execArgv: process.execArgv });
  });
  const results: Promise<WorkerResult>[] = workers.map(
    (w) =>
      new Promise((resolve, reject) => {
        w.on("message", (m: { result?: WorkerResult }) => {
          if (m.result) resolve(m.result);
        });
        w.once("error", reject);
        w.once("exit", (code) => {
          if (code !== 0) reject(new Error(`load thread exited with ${code}`));
        });
      }),
  );
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          const onMsg = (m: { ready?: boolean }) => {
            if (m.ready) {
              w.off("message", onMsg);
              resolve();
            }
          };
          w.on("message", onMsg);
          w.once("error", reject);
        }),
    ),
  );
  opts.onStart?.();
  for (const w of workers) w.postMessage("go");
  const t0 = performance.now();
  const ticker = opts.onTick ? setInterval(() => opts.onTick!(performance.now() - t0), 100) : undefined;
  const rs = await Promise.all(results).finally(() => clearInterval(ticker));
  await Promise.all(workers.map((w) => w.terminate()));
  const h = latencyHistogram();
  const sh = latencyHistogram();
  for (const r of rs) {
    h.add(decodeHistogram(r.latency));
    sh.add(decodeHistogram(r.service));
  }
  const sum = (f: (r: WorkerResult) => number) => rs.reduce((s, r) => s + f(r), 0);
  const series = (f: (r: WorkerResult) => number[]) => {
    const len = Math.max(...rs.map((r) => f(r).length));
    return Array.from({ length: len }, (_, i) => rs.reduce((s, r) => s + (f(r)[i] ?? 0), 0));
  };
  const wallSeconds = Math.max(...rs.map((r) => r.wallSeconds));
  return {
    threads: opts.threads,
    targetPerSec: opts.ratePerSec,
    sent: sum((r) => r.sent),
    completed: sum((r) => r.completed),
    errors: sum((r) => r.errors),
    firstError: rs.find((r) => r.firstError)?.firstError,
    achievedPerSec: sum((r) => r.completed) / wallSeconds,
    latency: summarize(h),
    service: summarize(sh),
    okPer100ms: series((r) => r.okPer100ms),
    errPer100ms: series((r) => r.errPer100ms),
    admittedPer100ms: series((r) => r.admittedPer100ms),
    offeredUnitsPer100ms: series((r) => r.offeredUnitsPer100ms),
    admitted: sum((r) => r.admitted),
    wallSeconds,
  };
}
