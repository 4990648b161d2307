import { Worker } from "node:worker_threads";
import type * as hdr from "hdr-histogram-js";
import { decodeHistogram, type LatencySummary, latencyHistogram, summarize } from "../testkit/histogram.js";
import type { OpenLoopOutcome } from "../testkit/open-loop.js";
import type { WorkerResult, WorkerTask } from "./worker.js";
import type { WorkloadSpec } from "./workloads.js";

type Series = "okPer100ms" | "errPer100ms" | "admittedPer100ms" | "offeredUnitsPer100ms";
/** What a load thread counts, summed over threads or runs (timelines per 100 ms). */
type Part = Pick<
  OpenLoopOutcome,
  "sent" | "completed" | "errors" | "firstError" | "admitted" | "wallSeconds" | Series
>;

/** A run of every load thread together; timelines are all threads per 100 ms. */
export interface LoadResult extends Part {
  threads: number;
  targetPerSec: number;
  achievedPerSec: number;
  latency: LatencySummary;
  /** Send to answer, without the schedule's own lateness. */
  service: LatencySummary;
  /** The histograms behind `latency` and `service`, to pool runs. */
  histograms: { latency: hdr.Histogram; service: hdr.Histogram };
}

const WORKER = new URL(`./worker.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url);

export interface LoadOptions {
  threads: number;
  ratePerSec: number;
  /** Seconds of each measured run. */
  seconds: number;
  keys: number;
  specFor: (thread: number) => WorkloadSpec;
  /** Thread i's share of `ratePerSec` (default: equal shares). */
  shareFor?: (thread: number) => number;
  /** Thread i's stepping rate, instead of a share of `ratePerSec`. */
  stepsFor?: (thread: number) => { everyMs: number; rates: number[] } | undefined;
  /** Unmeasured run at the same rate once the threads have connected (default 1 s). */
  warmupSeconds?: number;
}

export interface RunHooks {
  /** Called when every thread is ready, just before the measured run starts. */
  onStart?: () => void;
  /** Called every 100 ms of the measured run (progress, failure injection). */
  onTick?: (elapsedMs: number) => void;
}

/** Load threads that stay connected and warm between measured runs. */
export interface LoadThreads {
  /** One measured run on every thread, started together. */
  run(hooks?: RunHooks): Promise<LoadResult>;
  close(): Promise<void>;
}

/**
 * Starts `threads` load threads, each with its workload open and warmed up, each an open loop at
 * `ratePerSec / threads` when run. `specFor(i)` says what thread i drives.
 */
export async function startLoad(opts: LoadOptions): Promise<LoadThreads> {
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
  // A thread that fails or exits fails the run in progress (or the next one).
  let failure: Error | undefined;
  const waiting = new Set<(err: Error) => void>();
  const fail = (err: Error) => {
    failure ??= err;
    for (const reject of waiting) reject(err);
  };
  let closing = false;
  for (const w of workers) {
    w.once("error", fail);
    w.once("exit", (code) => {
      if (code !== 0 && !closing) fail(new Error(`load thread exited with ${code}`));
    });
  }
  const nextMessage = <T>(w: Worker, pick: (m: Record<string, unknown>) => T | undefined) =>
    new Promise<T>((resolve, reject) => {
      if (failure) return reject(failure);
      waiting.add(reject);
      const onMsg = (m: Record<string, unknown>) => {
        const v = pick(m);
        if (v === undefined) return;
        w.off("message", onMsg);
        waiting.delete(reject);
        resolve(v);
      };
      w.on("message", onMsg);
    });
  try {
    await Promise.all(workers.map((w) => nextMessage(w, (m) => (m.ready ? true : undefined))));
  } catch (err) {
    closing = true;
    await Promise.all(workers.map((w) => w.terminate()));
    throw err;
  }
  return {
    async run(hooks: RunHooks = {}) {
      const results = workers.map((w) => nextMessage(w, (m) => m.result as WorkerResult | undefined));
      hooks.onStart?.();
      for (const w of workers) w.postMessage("go");
      const t0 = performance.now();
      const ticker = hooks.onTick ? setInterval(() => hooks.onTick!(performance.now() - t0), 100) : undefined;
      const rs = await Promise.all(results).finally(() => clearInterval(ticker));
      return combine(opts, rs);
    },
    async close() {
      closing = true;
      const exited = workers.map((w) => new Promise((r) => w.once("exit", r)));
      for (const w of workers) w.postMessage("stop");
      const timeout = new Promise((r) => setTimeout(r, 5000).unref());
      await Promise.race([Promise.all(exited), timeout]);
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

/** Starts load threads, runs once, closes them. */
export async function runLoad(opts: LoadOptions & RunHooks): Promise<LoadResult> {
  const load = await startLoad(opts);
  try {
    return await load.run(opts);
  } finally {
    await load.close();
  }
}

/**
 * Parts (threads of one run, or runs of one workload) as one result: counts summed, histograms
 * merged; `together` says whether the parts ran at the same time (wall time the longest, timelines
 * added up) or one after another (wall time summed, timelines end to end).
 */
function merge(
  base: { threads: number; targetPerSec: number },
  parts: readonly Part[],
  histograms: readonly { latency: hdr.Histogram; service: hdr.Histogram }[],
  together: boolean,
): LoadResult {
  const h = latencyHistogram();
  const sh = latencyHistogram();
  for (const x of histograms) {
    h.add(x.latency);
    sh.add(x.service);
  }
  const sum = (f: (r: Part) => number) => parts.reduce((s, r) => s + f(r), 0);
  const series = (k: Series) => {
    if (!together) return parts.flatMap((r) => r[k]);
    const len = Math.max(...parts.map((r) => r[k].length));
    return Array.from({ length: len }, (_, i) => parts.reduce((s, r) => s + (r[k][i] ?? 0), 0));
  };
  const wallSeconds = together ? Math.max(...parts.map((r) => r.wallSeconds)) : sum((r) => r.wallSeconds);
  return {
    ...base,
    sent: sum((r) => r.sent),
    completed: sum((r) => r.completed),
    errors: sum((r) => r.errors),
    firstError: parts.find((r) => r.firstError)?.firstError,
    achievedPerSec: sum((r) => r.completed) / wallSeconds,
    latency: summarize(h),
    service: summarize(sh),
    okPer100ms: series("okPer100ms"),
    errPer100ms: series("errPer100ms"),
    admittedPer100ms: series("admittedPer100ms"),
    offeredUnitsPer100ms: series("offeredUnitsPer100ms"),
    admitted: sum((r) => r.admitted),
    wallSeconds,
    histograms: { latency: h, service: sh },
  };
}

function combine(opts: LoadOptions, rs: WorkerResult[]): LoadResult {
  const histograms = rs.map((r) => ({
    latency: decodeHistogram(r.latency),
    service: decodeHistogram(r.service),
  }));
  return merge({ threads: opts.threads, targetPerSec: opts.ratePerSec }, rs, histograms, true);
}

/**
 * Several runs of one workload as one: histograms merged, counts summed, the achieved rate over
 * their summed wall time, timelines one after another.
 */
export function poolLoads(rs: readonly LoadResult[]): LoadResult {
  if (rs.length === 0) throw new RangeError("poolLoads needs at least one run");
  const base = { threads: rs[0]!.threads, targetPerSec: rs[0]!.targetPerSec };
  return merge(
    base,
    rs,
    rs.map((r) => r.histograms),
    false,
  );
}
