/**
 * The one time port. Everything that reads the time or sets a timer takes a `Clock`, so the
 * deterministic simulation and exact tests drive the real code on a virtual clock. The core's
 * pure functions take `now` as a number instead.
 *
 * `Date.now` and the timer globals appear only here (and in the load-test harness and the test kit,
 * which pace real threads and wait on real processes by wall time): biome's `noRestrictedGlobals`
 * and the `lint/no-date-now.grit` plugin keep it so (lint/README.md).
 */
export interface Timer {
  cancel(): void;
}

export interface TimerOptions {
  /**
   * Keep the process alive until the timer fires (system clock only; virtual clocks ignore it).
   * Off by default: only a step the process must finish before exiting asks for it, e.g. forcing
   * a shutdown after its grace period or a retry that has to run.
   */
  ref?: boolean;
}

export interface Clock {
  /**
   * Milliseconds since the epoch (the virtual clocks start wherever they are told): for what is
   * shared with other processes or aligned to the calendar, such as windows. It can step.
   */
  now(): number;
  /**
   * Milliseconds from an arbitrary origin that never step back: for durations and deadlines
   * within this process (leases, timeouts, retries), which a wall clock stepped by NTP or by hand
   * would stretch or cut.
   */
  elapsed(): number;
  /**
   * Runs `fn` once after `ms`. The system clock's timers do not keep the process alive unless
   * `opts.ref` asks them to.
   */
  after(ms: number, fn: () => void, opts?: TimerOptions): Timer;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  elapsed: () => performance.now(),
  after(ms, fn, opts) {
    const t = setTimeout(fn, ms);
    // A timer of a library or server part must never keep its process alive on its own.
    if (!opts?.ref) t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

export const TIMED_OUT = Symbol("timed out");

/** `p`, or TIMED_OUT after `ms` on `clock` (ref'd as `opts` says: a shutdown's deadline must hold). */
export async function within<T>(
  clock: Clock,
  ms: number,
  p: Promise<T>,
  opts?: TimerOptions,
): Promise<T | typeof TIMED_OUT> {
  let timer: Timer | undefined;
  const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = clock.after(ms, () => resolve(TIMED_OUT), opts);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    timer?.cancel();
  }
}

/** Resolves after `ms` on `clock`. */
export function sleep(clock: Clock, ms: number, opts?: TimerOptions): Promise<void> {
  return new Promise((resolve) => clock.after(ms, resolve, opts));
}

/**
 * Runs `fn` every `ms` on `clock` until cancelled, like `setInterval`: each run sets the next
 * one before calling `fn`, so the period does not drift with `fn`'s own time.
 */
export function every(clock: Clock, ms: number, fn: () => void, opts?: TimerOptions): Timer {
  // As setInterval does, a period under 1 ms is 1 ms (and a virtual clock cannot spin in place).
  const period = Math.max(1, ms);
  let timer: Timer | undefined;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    timer = clock.after(period, tick, opts);
    fn();
  };
  timer = clock.after(period, tick, opts);
  return {
    cancel: () => {
      stopped = true;
      timer?.cancel();
    },
  };
}

interface Event {
  at: number;
  order: number;
  fn: (() => void) | undefined;
}

/**
 * A frozen clock that moves only when told, with timers: exact tests and the simulation. Timers
 * fire in time order (ties in the order they were set) as `advance` or `runUntil` passes them,
 * and time jumps from one event to the next, so a simulated minute takes only as long as the
 * work in it.
 */
export class ManualClock implements Clock {
  private t: number;
  /** The monotonic reading: moves with `advance`/`runUntil`, not with `set`. */
  private mono = 0;
  private order = 0;
  private heap: Event[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  elapsed(): number {
    return this.mono;
  }

  after(ms: number, fn: () => void): Timer {
    const e: Event = { at: this.t + Math.max(0, ms), order: this.order++, fn };
    this.push(e);
    return {
      cancel: () => {
        e.fn = undefined;
      },
    };
  }

  /** Moves the clock forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ms must be >= 0, got ${ms}`);
    this.runUntil(this.t + ms);
  }

  /**
   * Sets the wall time, forwards or back, firing no timers and leaving `elapsed` as it is (a test
   * placing itself in a window, or a wall clock stepped by hand).
   */
  set(t: number): void {
    this.t = t;
  }

  /** Runs every timer due up to `until`, then sets the clock to `until`. */
  runUntil(until: number): void {
    for (;;) {
      const e = this.heap[0];
      if (e === undefined || e.at > until) break;
      this.pop();
      this.moveTo(e.at);
      e.fn?.();
    }
    this.moveTo(until);
  }

  private moveTo(t: number): void {
    if (t > this.t) {
      this.mono += t - this.t;
      this.t = t;
    }
  }

  /** Timers set and not yet fired (cancelled ones included until their time). */
  get pending(): number {
    return this.heap.length;
  }

  private less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.order < b.order);
  }

  private push(e: Event): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
