/**
 * The invariant a chaos scenario is judged by: per key and per fixed window, what callers were
 * told was admitted stays within the key's limit (times 1 + epsilon), and no request was counted
 * twice. The checker only sees answers, as a caller does: it records every decision of a sync
 * `Check` (or a batched-mode total for a window) and groups them into epoch-aligned fixed windows
 * (start = at - at % windowMs), as the fixed-window algorithm does.
 */

export interface KeyLimit {
  /** Units admitted per window. */
  readonly limit: number;
  readonly windowMs: number;
}

export interface RecordedDecision {
  readonly key: string;
  /** When the decision was asked for (epoch ms). */
  readonly at: number;
  readonly cost: number;
  readonly allowed: boolean;
  /** Optional request id: an id recorded twice is reported by `duplicates()`. */
  readonly id?: string;
}

export interface WindowReport {
  readonly key: string;
  readonly windowStart: number;
  readonly admitted: number;
  /** Units refused (including answers carrying an error). */
  readonly rejected: number;
  readonly limit: number;
  /** admitted / limit (Infinity when the limit is 0 and something was admitted). */
  readonly ratio: number;
}

export interface Violation extends WindowReport {
  /** limit x (1 + epsilon): what `admitted` exceeded. */
  readonly bound: number;
}

interface Tally {
  admitted: number;
  rejected: number;
}

export class InvariantChecker {
  private readonly tallies = new Map<string, Map<number, Tally>>();
  private readonly ids = new Set<string>();
  private readonly dupes: string[] = [];
  private readonly limitOf: (key: string) => KeyLimit | undefined;

  /** `limits` by key, or a function giving a key's limit; a key without one is refused at record. */
  constructor(limits: Readonly<Record<string, KeyLimit>> | ((key: string) => KeyLimit | undefined)) {
    this.limitOf = typeof limits === "function" ? limits : (key) => limits[key];
  }

  /** One answer of a sync `Check` item. */
  record(d: RecordedDecision): void {
    if (d.id !== undefined) {
      if (this.ids.has(d.id)) this.dupes.push(d.id);
      else this.ids.add(d.id);
    }
    const t = this.tally(d.key, d.at);
    if (d.allowed) t.admitted += d.cost;
    else t.rejected += d.cost;
  }

  /** A batched-mode total: `admitted` units admitted for `key` in the window holding `at`. */
  recordTotal(key: string, at: number, admitted: number, rejected = 0): void {
    const t = this.tally(key, at);
    t.admitted += admitted;
    t.rejected += rejected;
  }

  /** Every (key, window) seen, by key then window start. */
  windows(): WindowReport[] {
    const out: WindowReport[] = [];
    for (const key of [...this.tallies.keys()].sort()) {
      const { limit } = this.limitFor(key);
      const byWindow = this.tallies.get(key)!;
      for (const start of [...byWindow.keys()].sort((a, b) => a - b)) {
        const t = byWindow.get(start)!;
        out.push({
          key,
          windowStart: start,
          admitted: t.admitted,
          rejected: t.rejected,
          limit,
          ratio: ratio(t.admitted, limit),
        });
      }
    }
    return out;
  }

  /** The largest admitted / limit over every window of `key`, or of every key; 0 when none. */
  maxRatio(key?: string): number {
    let max = 0;
    for (const w of this.windows()) if (key === undefined || w.key === key) max = Math.max(max, w.ratio);
    return max;
  }

  /** maxRatio of each key seen. */
  maxRatioByKey(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const w of this.windows()) out[w.key] = Math.max(out[w.key] ?? 0, w.ratio);
    return out;
  }

  /** The windows that admitted more than limit x (1 + epsilon). */
  check(epsilon: number): Violation[] {
    const out: Violation[] = [];
    for (const w of this.windows()) {
      const bound = w.limit * (1 + epsilon);
      if (w.admitted > bound) out.push({ ...w, bound });
    }
    return out;
  }

  /** Request ids recorded more than once (a retry counted twice), in the order seen. */
  duplicates(): readonly string[] {
    return this.dupes;
  }

  private tally(key: string, at: number): Tally {
    const { windowMs } = this.limitFor(key);
    const start = at - (((at % windowMs) + windowMs) % windowMs);
    let byWindow = this.tallies.get(key);
    if (!byWindow) {
      byWindow = new Map();
      this.tallies.set(key, byWindow);
    }
    let t = byWindow.get(start);
    if (!t) {
      t = { admitted: 0, rejected: 0 };
      byWindow.set(start, t);
    }
    return t;
  }

  private limitFor(key: string): KeyLimit {
    const l = this.limitOf(key);
    if (!l) throw new Error(`InvariantChecker: no limit for key ${key}`);
    if (!(l.windowMs > 0) || !(l.limit >= 0)) throw new Error(`InvariantChecker: bad limit for key ${key}`);
    return l;
  }
}

function ratio(admitted: number, limit: number): number {
  if (limit > 0) return admitted / limit;
  return admitted > 0 ? Number.POSITIVE_INFINITY : 0;
}

/**
 * When to record a sync answer so it lands in the window the server decided it in (a late answer
 * recorded on arrival falls into the next window and looks like excess there). The decision was
 * made between `sentAt` and `answeredAt`, and the server said its window ends `resetMs` after it,
 * so the end lies in [sentAt + resetMs, answeredAt + resetMs]; windows being epoch-aligned, it is
 * the boundary nearest the middle of that span (exact while the call took under half a window).
 * Without a reset (0: none given) the answer's arrival is all there is.
 */
export function decidedAt(sentAt: number, answeredAt: number, resetMs: number, windowMs: number): number {
  if (!(resetMs > 0)) return answeredAt;
  const end = Math.round(((sentAt + answeredAt) / 2 + resetMs) / windowMs) * windowMs;
  return end - 1;
}
