import type { Scheduler, Timer } from "../client/scheduler.js";
import type { Clock } from "../core/clock.js";

interface Event {
  at: number;
  order: number;
  fn: (() => void) | undefined;
}

/**
 * A discrete-event loop on a virtual clock: timers fire in time order (ties in the order they
 * were set), and time jumps from one event to the next. The client and the servers both read
 * this clock, so a simulated minute takes only as long as the work in it.
 */
export class VirtualScheduler implements Scheduler, Clock {
  private t: number;
  private order = 0;
  private heap: Event[] = [];

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
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

  /** Runs every event due up to `until`, then sets the clock to `until`. */
  runUntil(until: number): void {
    for (;;) {
      const e = this.heap[0];
      if (e === undefined || e.at > until) break;
      this.pop();
      this.t = e.at;
      e.fn?.();
    }
    this.t = Math.max(this.t, until);
  }

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
