import { cpus } from "node:os";
import { type IntervalHistogram, monitorEventLoopDelay } from "node:perf_hooks";
import { PRIORITIES, type Priority } from "../config/types.js";
import { type Clock, every, type Timer } from "../core/clock.js";
import { InvalidArgumentError } from "../core/errors.js";
import { PRIORITY_RANK } from "../core/priority.js";

/**
 * The host guard: the gateway library's last line of defence (seed 004's local level). It reads
 * the host's own load every `sampleMs` (CPU, event-loop delay, gauges the application supplies)
 * and, while any signal is past its threshold, sheds requests lowest priority class first; once
 * every signal is back under its threshold less the hysteresis, it sheds less, critical first
 * restored. Decided locally from the last sample: no network call, no I/O on the request path.
 *
 * The shedding level runs from 0 (nothing shed) to 4 (everything): class `low` (rank 0) sheds
 * `level` of its requests, `normal` `level - 1`, `high` `level - 2`, `critical` `level - 3`, each
 * clamped to [0, 1]. So `low` is shed whole before `normal` loses any, and `critical` goes last.
 * Each sample over a threshold raises the level by `riseStep`; each under the band lowers it by
 * `fallStep`; within the band it holds.
 */

/** One load signal: its latest reading is compared with its threshold. */
export interface LoadSignal {
  readonly name: string;
  readonly threshold: number;
  /** The current reading (NaN or a throw: no reading this time). */
  read(now: number): number;
  /** Releases what the signal holds (a histogram); optional. */
  close?(): void;
}

export interface GaugeSignal {
  /** Names the signal in metrics (`[a-z0-9_]`). */
  name: string;
  /** The application's own load figure (queue length, in-flight requests, memory...). */
  read: () => number;
  threshold: number;
}

export interface HostGuardOptions {
  /**
   * CPU busy: `process` (default) is this process's CPU time over wall time, in cores (1 = one
   * core busy, what a single event loop can use); `system` is the host's busy fraction of all its
   * cores (0..1).
   */
  cpu?: { threshold: number; scope?: "process" | "system" };
  /** Event-loop delay (perf_hooks monitorEventLoopDelay): its `percentile` (default 99) in ms. */
  eventLoopDelay?: { thresholdMs: number; percentile?: number };
  /** Figures the application supplies, each with its threshold. */
  gauges?: readonly GaugeSignal[];
  /** Signals built elsewhere (tests, other sources). */
  signals?: readonly LoadSignal[];
  /** How often the signals are read (default 250 ms). */
  sampleMs?: number;
  /** A signal is back under only below `threshold * (1 - hysteresis)` (default 0.1). */
  hysteresis?: number;
  /** Level added per sample over a threshold (default 0.25: a class shed whole in four samples). */
  riseStep?: number;
  /** Level taken off per sample under the band (default 0.1). */
  fallStep?: number;
}

/** The guard's state for metrics and `stats`. */
export interface HostGuardState {
  level: number;
  over: boolean;
  /** Latest reading of each signal (NaN: none). */
  readings: Record<string, number>;
  thresholds: Record<string, number>;
  /** Requests rejected and admitted by the guard, by class. */
  rejected: Record<Priority, number>;
  admitted: Record<Priority, number>;
}

const MAX_LEVEL = PRIORITIES.length;

export class HostGuard {
  readonly #signals: readonly LoadSignal[];
  readonly #sampleMs: number;
  readonly #hysteresis: number;
  readonly #rise: number;
  readonly #fall: number;
  #level = 0;
  #over = false;
  /** Shed fraction per rank, recomputed at each sample so `admit` only reads it. */
  readonly #shed = new Float64Array(MAX_LEVEL);
  readonly #readings: number[];
  readonly #rejected = new Float64Array(MAX_LEVEL);
  readonly #admitted = new Float64Array(MAX_LEVEL);
  #timer: Timer | undefined;

  constructor(
    options: HostGuardOptions,
    private readonly clock: Clock,
  ) {
    this.#sampleMs = option(options.sampleMs, 250, "sampleMs", 1, 60_000);
    this.#hysteresis = option(options.hysteresis, 0.1, "hysteresis", 0, 0.999_999);
    this.#rise = option(options.riseStep, 0.25, "riseStep", 1e-6, MAX_LEVEL);
    this.#fall = option(options.fallStep, 0.1, "fallStep", 1e-6, MAX_LEVEL);
    this.#signals = buildSignals(options, clock);
    this.#readings = this.#signals.map(() => Number.NaN);
  }

  /** Starts sampling on the clock (the limiter's `start` calls it). */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = every(this.clock, this.#sampleMs, () => this.sample());
  }

  stop(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    for (const s of this.#signals) s.close?.();
  }

  /**
   * Whether a request of class `priority` may go on: false for the shed fraction of its class.
   * `random` in [0, 1). Throws InvalidArgumentError for an unknown class.
   */
  admit(priority: Priority, random: number): boolean {
    if (!Object.hasOwn(PRIORITY_RANK, priority)) {
      throw new InvalidArgumentError(
        `priority ${JSON.stringify(priority)} is not one of ${PRIORITIES.join(", ")}`,
      );
    }
    const rank = PRIORITY_RANK[priority];
    const shed = this.#shed[rank]!;
    const ok = shed === 0 || (shed < 1 && random >= shed);
    if (ok) this.#admitted[rank]!++;
    else this.#rejected[rank]!++;
    return ok;
  }

  /** The fraction of class `priority`'s requests shed now. */
  shedFraction(priority: Priority): number {
    return this.#shed[PRIORITY_RANK[priority]]!;
  }

  get level(): number {
    return this.#level;
  }

  /** Reads every signal once and moves the level (called every `sampleMs`). */
  sample(): void {
    const now = this.clock.now();
    let over = false;
    let under = true;
    this.#signals.forEach((s, i) => {
      let v: number;
      try {
        v = s.read(now);
      } catch {
        v = Number.NaN;
      }
      this.#readings[i] = v;
      // No reading says nothing: it neither sheds nor holds shedding back.
      if (!Number.isFinite(v)) return;
      if (v > s.threshold) over = true;
      if (v >= s.threshold * (1 - this.#hysteresis)) under = false;
    });
    this.#over = over;
    // Rounded to 1e-9 so that steps of 0.1 add up to 0.3, not 0.30000000000000004.
    if (over) this.#level = Math.min(MAX_LEVEL, round9(this.#level + this.#rise));
    else if (under) this.#level = Math.max(0, round9(this.#level - this.#fall));
    for (let rank = 0; rank < MAX_LEVEL; rank++) {
      this.#shed[rank] = Math.min(1, Math.max(0, this.#level - rank));
    }
  }

  state(): HostGuardState {
    const byClass = (xs: Float64Array) =>
      Object.fromEntries(PRIORITIES.map((p, i) => [p, xs[i]!])) as Record<Priority, number>;
    return {
      level: this.#level,
      over: this.#over,
      readings: Object.fromEntries(this.#signals.map((s, i) => [s.name, this.#readings[i]!])),
      thresholds: Object.fromEntries(this.#signals.map((s) => [s.name, s.threshold])),
      rejected: byClass(this.#rejected),
      admitted: byClass(this.#admitted),
    };
  }
}

function round9(x: number): number {
  return Math.round(x * 1e9) / 1e9;
}

function option(v: number | undefined, fallback: number, name: string, min: number, max: number): number {
  if (v === undefined) return fallback;
  if (!(typeof v === "number" && v >= min && v <= max)) {
    throw new InvalidArgumentError(
      `hostGuard.${name} must be a number in [${min}, ${max}], got ${String(v)}`,
    );
  }
  return v;
}

function threshold(v: unknown, name: string): number {
  if (!(typeof v === "number" && Number.isFinite(v) && v > 0)) {
    throw new InvalidArgumentError(`hostGuard.${name} must be a finite number above 0, got ${String(v)}`);
  }
  return v;
}

const SIGNAL_NAME = /^[a-z][a-z0-9_]{0,63}$/;

function buildSignals(o: HostGuardOptions, clock: Clock): LoadSignal[] {
  const out: LoadSignal[] = [];
  if (o.cpu !== undefined) {
    const t = threshold(o.cpu.threshold, "cpu.threshold");
    const scope = o.cpu.scope ?? "process";
    if (scope !== "process" && scope !== "system") {
      throw new InvalidArgumentError(`hostGuard.cpu.scope must be process or system, got ${String(scope)}`);
    }
    out.push(scope === "process" ? processCpu(t, clock) : systemCpu(t));
  }
  if (o.eventLoopDelay !== undefined) {
    const t = threshold(o.eventLoopDelay.thresholdMs, "eventLoopDelay.thresholdMs");
    const p = o.eventLoopDelay.percentile ?? 99;
    if (!(typeof p === "number" && p > 0 && p <= 100)) {
      throw new InvalidArgumentError(
        `hostGuard.eventLoopDelay.percentile must be in (0, 100], got ${String(p)}`,
      );
    }
    out.push(eventLoopDelay(t, p));
  }
  (o.gauges ?? []).forEach((g, i) => {
    if (typeof g?.read !== "function") {
      throw new InvalidArgumentError(`hostGuard.gauges[${i}].read must be a function returning a number`);
    }
    if (typeof g.name !== "string" || !SIGNAL_NAME.test(g.name)) {
      throw new InvalidArgumentError(
        `hostGuard.gauges[${i}].name must be a short name of a-z, 0-9 and _, got ${JSON.stringify(g.name)}`,
      );
    }
    const t = threshold(g.threshold, `gauges[${i}].threshold`);
    out.push({ name: g.name, threshold: t, read: () => g.read() });
  });
  out.push(...(o.signals ?? []));
  if (out.length === 0) {
    throw new InvalidArgumentError("hostGuard needs at least one signal: cpu, eventLoopDelay or gauges");
  }
  const names = new Set<string>();
  for (const s of out) {
    if (names.has(s.name)) throw new InvalidArgumentError(`hostGuard has two signals named ${s.name}`);
    names.add(s.name);
  }
  return out;
}

/** This process's CPU time over the clock's time since the last reading, in cores. */
function processCpu(threshold: number, clock: Clock): LoadSignal {
  let last = process.cpuUsage();
  let at = clock.now();
  return {
    name: "cpu",
    threshold,
    read(now) {
      const used = process.cpuUsage(last);
      const elapsed = now - at;
      if (elapsed <= 0) return Number.NaN;
      last = process.cpuUsage();
      at = now;
      return (used.user + used.system) / 1000 / elapsed;
    },
  };
}

/** The host's busy fraction of all its cores since the last reading. */
function systemCpu(threshold: number): LoadSignal {
  const totals = () => {
    let busy = 0;
    let all = 0;
    for (const c of cpus()) {
      const t = c.times;
      busy += t.user + t.nice + t.sys + t.irq;
      all += t.user + t.nice + t.sys + t.irq + t.idle;
    }
    return { busy, all };
  };
  let last = totals();
  return {
    name: "cpu",
    threshold,
    read() {
      const now = totals();
      const all = now.all - last.all;
      const busy = now.busy - last.busy;
      last = now;
      return all > 0 ? busy / all : Number.NaN;
    },
  };
}

/** A percentile of the event loop's delay since the last reading, in ms. */
function eventLoopDelay(threshold: number, percentile: number): LoadSignal {
  const h: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  return {
    name: "event_loop_delay_ms",
    threshold,
    read() {
      const v = h.count > 0 ? h.percentile(percentile) / 1e6 : Number.NaN;
      h.reset();
      return v;
    },
    close() {
      h.disable();
    },
  };
}
