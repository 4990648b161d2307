/**
 * Paced traffic for benches that drive in-process gateways: every tick each stream is given its
 * rate's worth of decisions for the time since the last tick (fractions carried), counted per
 * bucket as offered and admitted. A tick that comes late still offers the right number, but in a
 * burst; how late the ticks came is this generator's lag, which says whether the process kept its
 * schedule (a starved machine) or not, so a run that fell behind can say so.
 */

export interface PacedStream {
  ratePerS: number;
  /** One decision: true if admitted. */
  decide: () => boolean;
}

export interface PacedLag {
  tickMs: number;
  /** How late ticks came (their gap less `tickMs`), ms: median, 99th percentile, worst. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The worst lateness in each second of the run, ms. */
  perSecondMaxMs: number[];
  /** Seconds with a tick over `BEHIND_MS` late: the generator (and the gateways' timers) fell behind there. */
  secondsBehind: number;
}

/** A tick this late means the process was not scheduled for several report intervals' worth of traffic. */
export const BEHIND_MS = 100;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export class PacedLoad {
  readonly offered: number[][];
  readonly admitted: number[][];
  private readonly carry: number[];
  private readonly buckets: number;
  private readonly late: number[] = [];
  private readonly perSecondMax: number[] = [];
  private timer: ReturnType<typeof setInterval> | undefined;
  private t0 = 0;
  private last = 0;

  constructor(
    private readonly streams: readonly PacedStream[],
    private readonly opts: { seconds: number; bucketMs?: number; tickMs?: number },
  ) {
    this.buckets = Math.ceil((opts.seconds * 1000) / this.bucketMs) + 10;
    this.offered = streams.map(() => new Array<number>(this.buckets).fill(0));
    this.admitted = streams.map(() => new Array<number>(this.buckets).fill(0));
    this.carry = streams.map(() => 0);
  }

  get bucketMs(): number {
    return this.opts.bucketMs ?? 100;
  }

  get tickMs(): number {
    return this.opts.tickMs ?? 10;
  }

  /** Ms since `start()`. */
  elapsed(): number {
    return Date.now() - this.t0;
  }

  start(): void {
    this.t0 = Date.now();
    this.last = this.t0;
    this.timer = setInterval(() => this.tick(), this.tickMs);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const now = Date.now();
    const dt = now - this.last;
    this.last = now;
    const late = Math.max(0, dt - this.tickMs);
    this.late.push(late);
    const sec = Math.floor((now - this.t0) / 1000);
    while (this.perSecondMax.length <= sec) this.perSecondMax.push(0);
    this.perSecondMax[sec] = Math.max(this.perSecondMax[sec]!, late);
    const b = Math.min(this.buckets - 1, Math.floor((now - this.t0) / this.bucketMs));
    for (let i = 0; i < this.streams.length; i++) {
      const s = this.streams[i]!;
      let n = this.carry[i]! + (s.ratePerS * dt) / 1000;
      while (n >= 1) {
        n--;
        this.offered[i]![b]!++;
        if (s.decide()) this.admitted[i]![b]!++;
      }
      this.carry[i] = n;
    }
  }

  /** Stream `i`'s offered or admitted from `fromMs` to `toMs` (ms since the start, whole buckets). */
  sum(series: "offered" | "admitted", i: number, fromMs: number, toMs: number): number {
    const xs = this[series][i]!;
    let n = 0;
    for (let b = Math.floor(fromMs / this.bucketMs); b < Math.floor(toMs / this.bucketMs); b++)
      n += xs[b] ?? 0;
    return n;
  }

  /** Streams `is`' admitted (or offered) per whole second from `fromMs`, `seconds` of them. */
  perSecond(
    series: "offered" | "admitted",
    is: readonly number[],
    fromMs: number,
    seconds: number,
  ): number[] {
    return Array.from({ length: seconds }, (_, k) =>
      is.reduce((n, i) => n + this.sum(series, i, fromMs + k * 1000, fromMs + (k + 1) * 1000), 0),
    );
  }

  lag(): PacedLag {
    const sorted = [...this.late].sort((a, b) => a - b);
    return {
      tickMs: this.tickMs,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      maxMs: sorted.at(-1) ?? 0,
      perSecondMaxMs: [...this.perSecondMax],
      secondsBehind: this.perSecondMax.filter((x) => x > BEHIND_MS).length,
    };
  }
}

/** A sentence on the generator's lag: whether the figures are the code's or a starved machine's. */
export function lagVerdict(lag: PacedLag): string {
  const figures = `ticks late p50 ${lag.p50Ms} ms, p99 ${lag.p99Ms} ms, max ${lag.maxMs} ms`;
  return lag.secondsBehind === 0
    ? `the generator kept its schedule (${figures})`
    : `the generator FELL BEHIND its schedule in ${lag.secondsBehind} s of the run (${figures}): its traffic and its gateways' reports came in bursts there; read the figures as the machine's as much as the code's`;
}
