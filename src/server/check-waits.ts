import { type Clock, systemClock, type Timer } from "../core/clock.js";
import { CapacityError } from "../core/decision.js";
import { InvalidArgumentError, UnavailableError } from "../core/errors.js";
import type { CheckRequest, CheckResponse } from "../protocol/messages.js";

/**
 * What a handler needs of its gRPC call to wait on it: the deadline and cancellation. grpc-js's
 * server calls have these; tests pass a small fake.
 */
export interface CallLike {
  /** An absolute wall-clock deadline (ms since the epoch, or a Date); Infinity when none. */
  getDeadline(): Date | number;
  readonly cancelled?: boolean;
  once(event: "cancelled", fn: () => void): unknown;
  removeListener(event: "cancelled", fn: () => void): unknown;
}

/** Milliseconds left before `call`'s deadline (Infinity without one). */
export function msLeft(call: CallLike | undefined): number {
  if (call === undefined) return Number.POSITIVE_INFINITY;
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  // gRPC deadlines are wall-clock instants of the real system: read against the system clock,
  // whatever clock the waiting itself runs on.
  return Number.isFinite(at) ? at - systemClock.now() : Number.POSITIVE_INFINITY;
}

/**
 * The answer is sent this long before the call's deadline (the caller's, or a forwarding
 * server's): a wait that would run to the deadline is answered not-allowed in time instead of
 * failing with DEADLINE_EXCEEDED.
 */
export const DEADLINE_MARGIN_MS = 50;

/**
 * The longest wait a Check item asks for (its `max_wait_ms`), after checking each: a number, not
 * negative, at most `maxWaitMs`. Throws InvalidArgumentError naming the item and the field.
 */
export function requestedWait(req: CheckRequest, maxWaitMs: number): number {
  let wait = 0;
  for (let i = 0; i < req.items.length; i++) {
    const v = req.items[i]!.maxWaitMs;
    if (v === undefined || v === 0) continue;
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new InvalidArgumentError(`items[${i}].max_wait_ms is not a number`);
    }
    if (v < 0) throw new InvalidArgumentError(`items[${i}].max_wait_ms is negative (${v})`);
    if (!(v <= maxWaitMs)) {
      throw new InvalidArgumentError(
        `items[${i}].max_wait_ms ${v} is over the maximum of maxCheckWaitMs ${maxWaitMs}`,
      );
    }
    wait = Math.max(wait, v);
  }
  return wait;
}

/** `req` with every item's max_wait_ms at most `ms` (a forwarded part must not outwait its caller). */
export function capWaits(req: CheckRequest, ms: number): CheckRequest {
  const cap = Math.max(0, Math.floor(ms));
  if (!req.items.some((it) => (it.maxWaitMs ?? 0) > cap)) return req;
  return {
    ...req,
    items: req.items.map((it) => ((it.maxWaitMs ?? 0) > cap ? { ...it, maxWaitMs: cap } : it)),
  };
}

/** What the waiting needs of the limiter. */
export interface CheckPorts {
  /** The exact, synchronous Check (`Limiter.check`). */
  check(req: CheckRequest): CheckResponse;
  /** The counter keys `req`'s items charge; undefined when any item is invalid here (not owned...). */
  counterKeys(req: CheckRequest): string[] | undefined;
}

export interface CheckWaitsOptions {
  clock: Clock;
  /** The largest max_wait_ms accepted (InputLimits.maxCheckWaitMs). */
  maxWaitMs: number;
  /** Waiting requests on one counter at most; past it a request is refused with RESOURCE_EXHAUSTED. */
  maxPerKey: number;
  /** Waiting requests on this server at most. */
  maxTotal: number;
}

interface Waiter {
  readonly req: CheckRequest;
  readonly keys: readonly string[];
  readonly resolve: (res: CheckResponse) => void;
  readonly reject: (err: Error) => void;
  timer: Timer | undefined;
  call: CallLike | undefined;
  onCancel: (() => void) | undefined;
  done: boolean;
}

/** The requests waiting on one counter, oldest first, and the counter's one wake-up timer. */
interface Queue {
  list: Waiter[];
  timer: Timer | undefined;
  at: number;
}

/**
 * Check items with `max_wait_ms`: the owner answers when the units are there or the wait runs
 * out. Waiting requests queue FIFO per counter key; a request is tried only when it is at the head
 * of every queue it is in, so the oldest waiter of a counter is admitted first, and the globally
 * oldest waiter always is at the head of all its queues (no deadlock). A request is admitted
 * whole: it is tried as an atomic check, which admits every item or charges nothing, so a waiting
 * request, atomic or not, waits until all its items fit (decided here; a request split over
 * several owners waits per owner). At its deadline it is decided once more as an ordinary Check,
 * in its own mode: a non-atomic request then gets what fits, the rest not allowed.
 *
 * Nothing polls: when the head cannot be admitted, the decision's `retryAt` (when the counter will
 * have its units, if no one else takes them) sets the one timer of its first counter; a waiter
 * that leaves (admitted, timed out, cancelled) tries the next head at once. Each waiter has its
 * own deadline timer. A request with no waiting item, or that fits now with no one ahead of it,
 * is answered at once as before.
 */
export class CheckWaits {
  private readonly queues = new Map<string, Queue>();
  #size = 0;
  #closed = false;
  /** Tries of waiting requests, and wake-up timers set, since start: the work waiting costs. */
  #attempts = 0;
  #timers = 0;

  constructor(
    private readonly opts: CheckWaitsOptions,
    private readonly ports: CheckPorts,
  ) {}

  /**
   * Whether any item of `req` asks to wait; throws InvalidArgumentError for a bad max_wait_ms
   * (a forwarding server checks before it forwards anything).
   */
  waits(req: CheckRequest): boolean {
    return requestedWait(req, this.opts.maxWaitMs) > 0;
  }

  /** Tries of waiting requests (atomic checks), and timers set for waking, since start. */
  get work(): { attempts: number; timers: number } {
    return { attempts: this.#attempts, timers: this.#timers };
  }

  /** Requests waiting now. */
  get size(): number {
    return this.#size;
  }

  /**
   * Decides `req`, waiting for its items' units up to their max_wait_ms (capped by `call`'s
   * deadline). Throws InvalidArgumentError for a bad max_wait_ms (nothing changed), CapacityError
   * past the bounds on waiters.
   */
  check(req: CheckRequest, call?: CallLike): CheckResponse | Promise<CheckResponse> {
    let wait = requestedWait(req, this.opts.maxWaitMs);
    if (wait === 0 || this.#closed) return this.ports.check(req);
    wait = Math.min(wait, msLeft(call) - DEADLINE_MARGIN_MS);
    if (wait <= 0 || call?.cancelled) return this.ports.check(req);
    const keys = this.ports.counterKeys(req);
    if (keys === undefined || keys.length === 0) return this.ports.check(req);
    const ahead = keys.some((k) => (this.queues.get(k)?.list.length ?? 0) > 0);
    let retry = 0;
    if (!ahead) {
      const tried = this.attempt(req);
      if (tried.answer !== undefined) return tried.answer;
      retry = tried.retryMs;
    }
    this.checkBounds(keys);
    return new Promise<CheckResponse>((resolve, reject) => {
      const w: Waiter = {
        req,
        keys,
        resolve,
        reject,
        timer: undefined,
        call,
        onCancel: undefined,
        done: false,
      };
      for (const k of keys) this.queue(k).list.push(w);
      this.#size++;
      w.timer = this.opts.clock.after(wait, () => this.expire(w));
      if (call !== undefined) {
        w.onCancel = () => this.cancel(w);
        call.once("cancelled", w.onCancel);
      }
      if (!ahead) this.arm(keys[0]!, retry);
    });
  }

  /** Answers every waiter as an ordinary Check would now (the server is shutting down). */
  close(): void {
    this.#closed = true;
    const all = new Set<Waiter>();
    for (const q of this.queues.values()) for (const w of q.list) all.add(w);
    for (const w of all) this.finish(w, () => this.ports.check(w.req));
  }

  /**
   * Tries `req` whole (atomic: all its items or nothing is charged). The answer when it was
   * admitted, or when waiting cannot help (an item failed: not owner, invalid...; or a cost the
   * limit can never admit): then it is decided as an ordinary Check. Otherwise when to try again.
   */
  private attempt(req: CheckRequest): { answer?: CheckResponse; retryMs: number } {
    this.#attempts++;
    const probe = this.ports.check(req.atomic ? req : { ...req, atomic: true });
    let retryMs = 0;
    for (const r of probe.results) {
      if (r.error?.code) return { answer: req.atomic ? probe : this.ports.check(req), retryMs: 0 };
      if (r.allowed) continue;
      // Not allowed with no time to retry: never (or a fitting item held back by the others).
      retryMs = Math.max(retryMs, r.retryMs ?? 0);
    }
    if (probe.results.every((r) => r.allowed)) return { answer: probe, retryMs: 0 };
    if (retryMs === 0) return { answer: req.atomic ? probe : this.ports.check(req), retryMs: 0 };
    return { retryMs };
  }

  private checkBounds(keys: readonly string[]): void {
    for (const k of keys) {
      if ((this.queues.get(k)?.list.length ?? 0) >= this.opts.maxPerKey) {
        throw new CapacityError(
          this.opts.maxPerKey,
          `${k} has its maximum of ${this.opts.maxPerKey} waiting checks (maxCheckWaitersPerKey): retry later`,
        );
      }
    }
    if (this.#size >= this.opts.maxTotal) {
      throw new CapacityError(
        this.opts.maxTotal,
        `this server has its maximum of ${this.opts.maxTotal} waiting checks (maxCheckWaiters): retry later`,
      );
    }
  }

  private queue(key: string): Queue {
    let q = this.queues.get(key);
    if (q === undefined) {
      q = { list: [], timer: undefined, at: Number.POSITIVE_INFINITY };
      this.queues.set(key, q);
    }
    return q;
  }

  /** The one wake-up timer of `key`, at `ms` from now (kept if an earlier one is set). */
  private arm(key: string, ms: number): void {
    const q = this.queues.get(key);
    if (q === undefined) return;
    const at = this.opts.clock.elapsed() + ms;
    if (q.timer !== undefined && q.at <= at) return;
    q.timer?.cancel();
    q.at = at;
    this.#timers++;
    q.timer = this.opts.clock.after(ms, () => {
      q.timer = undefined;
      q.at = Number.POSITIVE_INFINITY;
      this.drain([key]);
    });
  }

  /** Tries the heads of `keys`' queues, and of the queues a waiter that left was in, in turn. */
  private drain(keys: string[]): void {
    const work = keys.slice();
    while (work.length > 0) {
      const k = work.pop()!;
      const w = this.queues.get(k)?.list[0];
      // A waiter is tried only at the head of all its queues (its other queues wake it later).
      if (w === undefined || !w.keys.every((x) => this.queues.get(x)?.list[0] === w)) continue;
      const tried = this.attempt(w.req);
      if (tried.answer === undefined) {
        this.arm(w.keys[0]!, tried.retryMs);
        continue;
      }
      const answer = tried.answer;
      this.finish(w, () => answer);
      work.push(...w.keys);
    }
  }

  /** The wait ran out: decided once more as an ordinary Check, in the request's own mode. */
  private expire(w: Waiter): void {
    if (w.done) return;
    this.finish(w, () => this.ports.check(w.req));
    this.drain([...w.keys]);
  }

  /** The caller cancelled: its place is freed, nothing charged. */
  private cancel(w: Waiter): void {
    if (w.done) return;
    this.finish(w, () => {
      throw new UnavailableError("the caller cancelled the call");
    });
    this.drain([...w.keys]);
  }

  /** Takes `w` out of its queues and answers it with `answer()` (or what it throws). */
  private finish(w: Waiter, answer: () => CheckResponse): void {
    if (w.done) return;
    w.done = true;
    this.#size--;
    w.timer?.cancel();
    if (w.onCancel !== undefined) w.call?.removeListener("cancelled", w.onCancel);
    for (const k of w.keys) {
      const q = this.queues.get(k);
      if (q === undefined) continue;
      const i = q.list.indexOf(w);
      if (i >= 0) q.list.splice(i, 1);
      if (q.list.length === 0) {
        q.timer?.cancel();
        this.queues.delete(k);
      }
    }
    try {
      w.resolve(answer());
    } catch (err) {
      w.reject(err as Error);
    }
  }
}
