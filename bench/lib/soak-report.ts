/**
 * The soak's figures: one sample per process every 10 s from its Prometheus text (prom-client's
 * default metrics), and the verdict on whether each stayed flat between the start window (just
 * after warm-up) and the end window (the last minutes).
 */

export interface Sample {
  /** Seconds since the load started. */
  t: number;
  rssBytes: number;
  heapUsedBytes: number;
  handles: number;
  /** p99 of the event-loop delay since the previous scrape (prom-client resets it on each). */
  lagP99Seconds: number;
  cpuSeconds: number;
  /** Servers only. */
  counters?: number;
  clients?: number;
  /** Which run of the process (a restarted server starts a new one). */
  incarnation: number;
}

/** Unlabelled sample values by metric name (labelled series are skipped). */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

export function sampleFrom(text: string, t: number, incarnation: number): Sample {
  const m = parseProm(text);
  const need = (name: string) => {
    const v = m.get(name);
    if (v === undefined) throw new Error(`/metrics has no ${name}`);
    return v;
  };
  return {
    t,
    rssBytes: need("process_resident_memory_bytes"),
    heapUsedBytes: need("nodejs_heap_size_used_bytes"),
    handles: need("nodejs_active_handles_total"),
    lagP99Seconds: need("nodejs_eventloop_lag_p99_seconds"),
    cpuSeconds: need("process_cpu_seconds_total"),
    counters: m.get("shardlimit_counters"),
    clients: m.get("shardlimit_clients"),
    incarnation,
  };
}

export interface Thresholds {
  /** Heap fails when the end's minimum is over the start's by more than both of these. */
  heapGrowthFraction: number;
  heapGrowthBytes: number;
  rssGrowthFraction: number;
  rssGrowthBytes: number;
  /** Handles fail when the end's median is over the start's by more than this. */
  handlesGrowth: number;
  /** Lag fails when the end's median p99 is over both start x this and `lagEndSeconds`. */
  lagFactor: number;
  lagEndSeconds: number;
}

export const THRESHOLDS: Thresholds = {
  heapGrowthFraction: 0.2,
  heapGrowthBytes: 20 * 2 ** 20,
  rssGrowthFraction: 0.3,
  rssGrowthBytes: 50 * 2 ** 20,
  handlesGrowth: 10,
  lagFactor: 3,
  lagEndSeconds: 0.02,
};

export interface Window {
  from: number;
  to: number;
}

export interface Figures {
  samples: number;
  /** Minimum over the window: the floor between collections, not garbage waiting for one. */
  rssBytes: number;
  heapUsedBytes: number;
  /** Median over the window. */
  handles: number;
  lagP99Seconds: number;
  /** Largest p99 of any 10 s in the window. */
  lagP99MaxSeconds: number;
  counters?: number;
  clients?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function figures(samples: readonly Sample[], w: Window): Figures | undefined {
  const in_ = samples.filter((s) => s.t >= w.from && s.t <= w.to);
  if (in_.length === 0) return undefined;
  const opt = (xs: (number | undefined)[]) => {
    const d = xs.filter((x): x is number => x !== undefined);
    return d.length > 0 ? median(d) : undefined;
  };
  return {
    samples: in_.length,
    rssBytes: Math.min(...in_.map((s) => s.rssBytes)),
    heapUsedBytes: Math.min(...in_.map((s) => s.heapUsedBytes)),
    handles: median(in_.map((s) => s.handles)),
    lagP99Seconds: median(in_.map((s) => s.lagP99Seconds)),
    lagP99MaxSeconds: Math.max(...in_.map((s) => s.lagP99Seconds)),
    counters: opt(in_.map((s) => s.counters)),
    clients: opt(in_.map((s) => s.clients)),
  };
}

export interface Verdict {
  metric: string;
  start: number;
  end: number;
  flat: boolean;
  /** Why not judged (e.g. the process restarted between the windows). */
  skipped?: string;
}

/** Each figure's start, end and whether it stayed within the thresholds. */
export function judge(
  start: Figures,
  end: Figures,
  th: Thresholds = THRESHOLDS,
  memorySkipped?: string,
): Verdict[] {
  const grew = (a: number, b: number, frac: number, abs: number) => b - a > frac * a && b - a > abs;
  const mem = (metric: string, a: number, b: number, frac: number, abs: number): Verdict =>
    memorySkipped
      ? { metric, start: a, end: b, flat: true, skipped: memorySkipped }
      : { metric, start: a, end: b, flat: !grew(a, b, frac, abs) };
  return [
    mem("rss", start.rssBytes, end.rssBytes, th.rssGrowthFraction, th.rssGrowthBytes),
    mem("heap", start.heapUsedBytes, end.heapUsedBytes, th.heapGrowthFraction, th.heapGrowthBytes),
    memorySkipped
      ? { metric: "handles", start: start.handles, end: end.handles, flat: true, skipped: memorySkipped }
      : {
          metric: "handles",
          start: start.handles,
          end: end.handles,
          flat: end.handles - start.handles <= th.handlesGrowth,
        },
    {
      metric: "lag p99",
      start: start.lagP99Seconds,
      end: end.lagP99Seconds,
      flat: !(end.lagP99Seconds > th.lagFactor * start.lagP99Seconds && end.lagP99Seconds > th.lagEndSeconds),
    },
  ];
}

export function mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

export function msOf(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms`;
}
