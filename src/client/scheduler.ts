/**
 * Time and timers for the gateway client. Injected so the deterministic simulation can drive the
 * real client on a virtual clock; in production it is the system clock and unref'd timers.
 */
export interface Timer {
  cancel(): void;
}

export interface Scheduler {
  /** Milliseconds; only differences matter to the client. */
  now(): number;
  /** Runs `fn` once after `ms`. */
  after(ms: number, fn: () => void): Timer;
}

export const systemScheduler: Scheduler = {
  now: () => Date.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    // A gateway's limiter must never keep its process alive on its own.
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};
