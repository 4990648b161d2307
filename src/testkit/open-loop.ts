import { performance } from "node:perf_hooks";
import type * as hdr from "hdr-histogram-js";
import { latencyHistogram } from "./histogram.js";
import { PreciseTimer } from "./precise-timer.js";

/**
 * Up to this rate the schedule wakes through a PreciseTimer (one message per wake-up, ~0.2 ms
 * late); above it calls are less than half a millisecond apart and Node's timers, which send
 * whatever is due on each whole-millisecond tick, cost less.
 */
const PRECISE_UP_TO_PER_SEC = 2000;

export interface OpenLoopOutcome {
  sent: number;
  completed: number;
  errors: number;
  firstError: string | undefined;
  /** From each call's scheduled time to its completion, in microseconds. */
  latency: hdr.Histogram;
  /** From each call's actual send to its completion (without the schedule's timer lateness). */
  service: hdr.Histogram;
  /** How late each call left against its schedule: the generator's own lag. */
  sendLag: hdr.Histogram;
  maxInFlight: number;
  /** Completed and failed calls per 100 ms since the start, for timelines. */
  okPer100ms: number[];
  errPer100ms: number[];
  /** Units admitted (a call that returned true is one unit), per 100 ms. */
  admittedPer100ms: number[];
  /** Units offered by completed calls, per 100 ms. */
  offeredUnitsPer100ms: number[];
  admitted: number;
  wallSeconds: number;
}

/**
 * Open loop: call i is due at start + i / rate whatever happened to earlier calls, and its latency
 * counts from that due time, so a stall shows in the latency of every call behind it (no
 * coordinated omission). Calls go out when the schedule wakes at or after they are due: ~0.1-0.3
 * ms late through a PreciseTimer at low rates, up to a millisecond on Node's timers at high ones;
 * `service` leaves that lateness out. `call` may be synchronous (returns anything but a promise). Calls still running `graceMs`
 * after the last is due count as errors.
 */
export async function openLoop(opts: {
  ratePerSec: number;
  seconds: number;
  call: (i: number) => unknown;
  /** A rate that changes over the run (ms since the start); overrides `ratePerSec`. */
  rateAt?: (ms: number) => number;
  graceMs?: number;
  stop?: () => boolean;
  /** Wakes the schedule at low rates; the caller's to close. */
  timer?: PreciseTimer;
  /**
   * Keep the schedule on setImmediate instead of sleeping between calls: calls leave on time at
   * any rate, at the cost of one busy core (the gRPC benchmarks, whose generator's CPU is not in
   * the figures).
   */
  spin?: boolean;
}): Promise<OpenLoopOutcome> {
  const { ratePerSec, seconds, call } = opts;
  const endMs = seconds * 1000;
  /** Due time of the next call, ms since the start. */
  let dueMs = 0;
  const rateAt = opts.rateAt ?? (() => ratePerSec);
  const advance = () => {
    const rate = rateAt(dueMs);
    // At rate 0 look again 10 ms later.
    dueMs += rate > 0 ? 1000 / rate : 10;
    return rate > 0;
  };
  const lat = latencyHistogram();
  const service = latencyHistogram();
  const lag = latencyHistogram();
  const buckets = Math.ceil(seconds * 10) + 1;
  const okPer100ms = new Array<number>(buckets).fill(0);
  const errPer100ms = new Array<number>(buckets).fill(0);
  const admittedPer100ms = new Array<number>(buckets).fill(0);
  const offeredUnitsPer100ms = new Array<number>(buckets).fill(0);
  let admitted = 0;
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  let inFlight = 0;
  let maxInFlight = 0;
  const needsTimer = !opts.spin && (opts.rateAt !== undefined || ratePerSec <= PRECISE_UP_TO_PER_SEC);
  // A timer of the caller's is kept (starting its thread takes tens of milliseconds, which would
  // shift this run's start against the caller's clock); one started here is closed here.
  const own = needsTimer && !opts.timer ? await PreciseTimer.start() : undefined;
  const precise = needsTimer ? (opts.timer ?? own) : undefined;
  const start = performance.now() + 5;
  const bucketOf = (t: number) => Math.min(buckets - 1, Math.max(0, Math.floor((t - start) / 100)));
  return new Promise((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      own?.close();
      errors += inFlight;
      resolve({
        sent,
        completed,
        errors,
        firstError,
        latency: lat,
        service,
        sendLag: lag,
        maxInFlight,
        okPer100ms,
        errPer100ms,
        admittedPer100ms,
        offeredUnitsPer100ms,
        admitted,
        wallSeconds: (performance.now() - start) / 1000,
      });
    };
    const done = (due: number, sentAt: number, result: unknown) => {
      const t = performance.now();
      service.recordValue(Math.max(1, Math.round((t - sentAt) * 1000)));
      inFlight--;
      completed++;
      okPer100ms[bucketOf(t)]!++;
      // true/false: one call admitted or not; a number: units admitted (> 0) or rejected (< 0).
      // { admitted, offered }: a burst of several requests.
      const burst =
        typeof result === "object" && result !== null
          ? (result as { admitted: number; offered: number })
          : undefined;
      const units = burst ? burst.admitted : typeof result === "number" ? result : result === true ? 1 : 0;
      offeredUnitsPer100ms[bucketOf(t)]! += burst
        ? burst.offered
        : typeof result === "number"
          ? Math.abs(result)
          : 1;
      if (units > 0) {
        admitted += units;
        admittedPer100ms[bucketOf(t)]! += units;
      }
      lat.recordValue(Math.max(1, Math.round((t - due) * 1000)));
    };
    const failed = (err: unknown) => {
      inFlight--;
      errors++;
      errPer100ms[bucketOf(performance.now())]!++;
      firstError ??= err instanceof Error ? err.message : String(err);
    };
    const tick = () => {
      const now = performance.now();
      while (dueMs < endMs && start + dueMs <= now && !opts.stop?.()) {
        const due = start + dueMs;
        if (!advance()) continue;
        const i = sent++;
        inFlight++;
        if (inFlight > maxInFlight) maxInFlight = inFlight;
        const sentAt = performance.now();
        lag.recordValue(Math.max(1, Math.round((sentAt - due) * 1000)));
        let out: unknown;
        try {
          out = call(i);
        } catch (err) {
          failed(err);
          continue;
        }
        if (out instanceof Promise) out.then((r) => done(due, sentAt, r), failed);
        else done(due, sentAt, out);
      }
      if (dueMs >= endMs || opts.stop?.()) {
        if (inFlight === 0) finish();
        else {
          const grace = setTimeout(finish, opts.graceMs ?? 5000);
          const poll = () => {
            if (inFlight === 0) {
              clearTimeout(grace);
              finish();
            } else if (!finished) setTimeout(poll, 5);
          };
          poll();
        }
        return;
      }
      // Sleep until the next call is due rather than spin: the generator's CPU counts in the
      // figures, so it must use only what its calls need. The latency of a call sent late counts
      // from its due time all the same.
      const wait = start + dueMs - performance.now();
      if (wait <= 0 || opts.spin) setImmediate(tick);
      else if (precise && rateAt(dueMs) <= PRECISE_UP_TO_PER_SEC) precise.at(start + dueMs, tick);
      else setTimeout(tick, Math.max(0, wait - 0.5));
    };
    setTimeout(tick, 5);
  });
}
