import type { Clock, Timer } from "../core/clock.js";
import { CapacityError } from "../core/decision.js";
import { InvalidArgumentError } from "../core/errors.js";

/** How `GatewayLimiter.wait` waits. */
export interface WaitOptions {
  /**
   * Milliseconds to wait at most (0: decide at once, like `decide`). At the timeout the promise
   * resolves false.
   */
  timeoutMs: number;
  /**
   * Gives up early: the promise resolves false (as at the timeout, never rejects) and the place in
   * the queue is freed. A signal already aborted answers false at once without taking anything.
   */
  signal?: AbortSignal;
}

/** The longest `timeoutMs` accepted: beyond an hour a caller should rather be told no. */
export const MAX_WAIT_TIMEOUT_MS = 3_600_000;

/** Why `timeoutMs` is unacceptable, or undefined. */
export function waitTimeoutProblem(timeoutMs: unknown): string | undefined {
  if (typeof timeoutMs !== "number" || Number.isNaN(timeoutMs)) return "timeoutMs is not a number";
  if (timeoutMs < 0) return `timeoutMs is negative (${timeoutMs})`;
  if (!(timeoutMs <= MAX_WAIT_TIMEOUT_MS))
    return `timeoutMs ${timeoutMs} is over the maximum of ${MAX_WAIT_TIMEOUT_MS}`;
  return undefined;
}

/** One caller waiting for units of one counter. */
interface Waiter<K> {
  readonly key: K;
  readonly cost: number;
  readonly resolve: (ok: boolean) => void;
  timer: Timer | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** The callers waiting on one counter, oldest first, and the counter's one wake-up timer. */
class Queue<K> {
  readonly list: Waiter<K>[] = [];
  /** Units the queue waits for in all: the demand it shows the owner. */
  units = 0;
  /** Set while a REJECT_UNTIL policy holds the key: the one wake-up at its end. */
  wakeAt: Timer | undefined;
  wakeTime = Number.POSITIVE_INFINITY;
}

export interface WaitersOptions {
  clock: Clock;
  /** Waiters on one counter at most; past it `add` throws CapacityError. */
  maxPerKey: number;
  /** Waiters over all counters at most. */
  maxTotal: number;
}

/**
 * The gateway's queues of callers waiting for quota, one per counter key, FIFO: a waiter is
 * admitted only once every waiter before it on that counter was. Nothing here polls: a queue is
 * tried when something may have given its counter units (a policy arrived, a REJECT_UNTIL ended,
 * a report round while the key is on its fallback share, a waiter ahead gave up), and each waiter
 * holds only its own timeout timer. `tryAdmit` is the limiter's decision, minus the rejection it
 * would count: the demand of a waiting queue is counted once per report round instead
 * (`demand`), so it does not grow with the number of times the queue was tried.
 */
export class Waiters<K> {
  private readonly queues = new Map<string, Queue<K>>();
  #size = 0;
  /** Decisions tried for waiters, and timers set for them: the work waiting costs. */
  #attempts = 0;
  #timers = 0;

  constructor(
    private readonly opts: WaitersOptions,
    /** Admits `cost` on `key` now if the key's policy allows, counting nothing if not. */
    private readonly tryAdmit: (key: K, cost: number) => boolean,
  ) {}

  /** Waiters in all. */
  get size(): number {
    return this.#size;
  }

  /** Decisions tried for waiters (each one a wake-up's work), since start. */
  get attempts(): number {
    return this.#attempts;
  }

  /** Timers set for waiting (one timeout per waiter, one wake-up per REJECT_UNTIL), since start. */
  get timers(): number {
    return this.#timers;
  }

  /** Whether callers wait on `counter`: a new caller must queue behind them. */
  has(counter: string): boolean {
    return (this.queues.get(counter)?.list.length ?? 0) > 0;
  }

  /**
   * Queues a caller behind the others on `counter`: `done(true)` once admitted, `done(false)` at
   * the timeout, an abort or `close`. Throws CapacityError past the bounds.
   */
  add(
    counter: string,
    key: K,
    cost: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    done: (ok: boolean) => void,
  ): void {
    let q = this.queues.get(counter);
    if ((q?.list.length ?? 0) >= this.opts.maxPerKey) {
      throw new CapacityError(
        this.opts.maxPerKey,
        `${counter} has its maximum of ${this.opts.maxPerKey} waiters (maxWaitersPerKey): decide or fail instead`,
      );
    }
    if (this.#size >= this.opts.maxTotal) {
      throw new CapacityError(
        this.opts.maxTotal,
        `this gateway has its maximum of ${this.opts.maxTotal} waiters (maxWaiters): decide or fail instead`,
      );
    }
    if (q === undefined) {
      q = new Queue<K>();
      this.queues.set(counter, q);
    }
    const queue = q;
    const w: Waiter<K> = { key, cost, resolve: done, timer: undefined, signal, onAbort: undefined };
    queue.list.push(w);
    queue.units += cost;
    this.#size++;
    this.#timers++;
    w.timer = this.opts.clock.after(timeoutMs, () => this.leave(counter, queue, w));
    if (signal !== undefined) {
      w.onAbort = () => this.leave(counter, queue, w);
      signal.addEventListener("abort", w.onAbort, { once: true });
    }
  }

  /** Admits waiters of `counter` from the head while the key's policy lets them through. */
  wake(counter: string): void {
    const q = this.queues.get(counter);
    if (q === undefined) return;
    while (q.list.length > 0) {
      const w = q.list[0]!;
      this.#attempts++;
      if (!this.tryAdmit(w.key, w.cost)) break;
      q.list.shift();
      this.finish(q, w, true);
    }
    this.dropIfEmpty(counter, q);
  }

  /**
   * One wake-up of `counter` at `delayMs` from now (a REJECT_UNTIL policy's end), not one per
   * waiter; `stillWaiting` runs after it if callers are left waiting.
   */
  wakeIn(counter: string, delayMs: number, stillWaiting?: () => void): void {
    const q = this.queues.get(counter);
    if (q === undefined) return;
    const at = this.opts.clock.elapsed() + delayMs;
    if (q.wakeAt !== undefined && q.wakeTime <= at) return;
    q.wakeAt?.cancel();
    q.wakeTime = at;
    this.#timers++;
    q.wakeAt = this.opts.clock.after(delayMs, () => {
      q.wakeAt = undefined;
      q.wakeTime = Number.POSITIVE_INFINITY;
      this.wake(counter);
      if (this.has(counter)) stillWaiting?.();
    });
  }

  /** Each waiting counter with its head's key and the units its queue waits for. */
  *demand(): IterableIterator<[counter: string, head: K, units: number]> {
    for (const [counter, q] of this.queues) {
      const head = q.list[0];
      if (head !== undefined) yield [counter, head.key, q.units];
    }
  }

  /** Resolves every waiter false (the limiter is closing). */
  close(): void {
    for (const [counter, q] of this.queues) {
      for (const w of q.list.splice(0)) this.finish(q, w, false);
      this.dropIfEmpty(counter, q);
    }
  }

  /** A waiter timed out or gave up: its place is freed, and the one behind may fit now. */
  private leave(counter: string, q: Queue<K>, w: Waiter<K>): void {
    const i = q.list.indexOf(w);
    if (i < 0) return;
    q.list.splice(i, 1);
    this.finish(q, w, false);
    // A smaller cost behind a large one may be admitted at once.
    if (i === 0) this.wake(counter);
    else this.dropIfEmpty(counter, q);
  }

  private finish(q: Queue<K>, w: Waiter<K>, ok: boolean): void {
    q.units -= w.cost;
    this.#size--;
    w.timer?.cancel();
    if (w.onAbort !== undefined) w.signal?.removeEventListener("abort", w.onAbort);
    w.resolve(ok);
  }

  private dropIfEmpty(counter: string, q: Queue<K>): void {
    if (q.list.length > 0 || this.queues.get(counter) !== q) return;
    q.wakeAt?.cancel();
    this.queues.delete(counter);
  }
}

/** Checks the options of a wait; throws InvalidArgumentError naming the field. */
export function checkWaitOptions(opts: WaitOptions): void {
  const bad = waitTimeoutProblem(opts?.timeoutMs);
  if (bad !== undefined) throw new InvalidArgumentError(bad);
}
