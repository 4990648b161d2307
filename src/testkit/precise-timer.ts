import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";

/**
 * A timer with sub-millisecond precision for open-loop schedules. Node's timers fire on whole
 * milliseconds (a call due 0.3 ms from now waits 1-2 ms), which adds up to a millisecond to every
 * latency counted from a due time. Here a helper thread sleeps in `Atomics.wait` (which takes
 * fractional milliseconds) until the requested instant and then wakes this thread's event loop
 * with a message: about 0.1-0.3 ms late instead of 0.5-1.1 ms, at the cost of one message per
 * wake-up. One wake-up is pending at a time; asking for another replaces it.
 */

// The helper thread: waits for a new target (the sequence number at [0] changes), sleeps until
// the target (a Float64 at byte 8: timeOrigin + now, in ms) unless the target changes
// first, then posts the sequence number it slept for. [1] = 1 asks it to exit.
const HELPER = `
const { parentPort, workerData } = require("node:worker_threads");
const { performance } = require("node:perf_hooks");
const i32 = new Int32Array(workerData.sab, 0, 2);
const f64 = new Float64Array(workerData.sab, 8, 1);
let seen = 0;
for (;;) {
  Atomics.wait(i32, 0, seen);
  if (Atomics.load(i32, 1) === 1) break;
  seen = Atomics.load(i32, 0);
  let changed = false;
  for (;;) {
    const wait = f64[0] - (performance.timeOrigin + performance.now());
    if (wait <= 0) break;
    if (Atomics.wait(i32, 0, seen, wait) === "not-equal") { changed = true; break; }
  }
  if (Atomics.load(i32, 1) === 1) break;
  if (!changed) parentPort.postMessage(seen);
}
`;

export class PreciseTimer {
  private readonly sab = new SharedArrayBuffer(16);
  private readonly i32 = new Int32Array(this.sab, 0, 2);
  private readonly f64 = new Float64Array(this.sab, 8, 1);
  private readonly worker: Worker;
  private seq = 0;
  private pending: (() => void) | undefined;

  /** A timer whose helper thread is running (its first wake-up is then on time too). */
  static async start(): Promise<PreciseTimer> {
    const t = new PreciseTimer();
    await new Promise<void>((resolve, reject) => {
      t.worker.once("online", resolve);
      t.worker.once("error", reject);
    });
    return t;
  }

  private constructor() {
    this.worker = new Worker(HELPER, {
      eval: true,
      workerData: { sab: this.sab },
    });
    this.worker.on("message", (seq: number) => {
      if (seq !== this.seq || this.pending === undefined) return;
      const fn = this.pending;
      this.pending = undefined;
      this.worker.unref();
      fn();
    });
    this.worker.unref();
  }

  /** Calls `fn` once `performance.now()` (this thread's) reaches `atMs`. */
  at(atMs: number, fn: () => void): void {
    this.pending = fn;
    // performance.now() counts from each thread's own time origin: the helper gets an absolute time.
    this.f64[0] = atMs + performance.timeOrigin;
    this.seq = (this.seq + 1) | 0 || 1;
    Atomics.store(this.i32, 0, this.seq);
    Atomics.notify(this.i32, 0);
    this.worker.ref();
  }

  /** Stops the helper thread; a pending wake-up is dropped. */
  close(): void {
    this.pending = undefined;
    Atomics.store(this.i32, 1, 1);
    Atomics.notify(this.i32, 0);
    void this.worker.terminate();
  }
}
