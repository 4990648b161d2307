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
  /** V8's heap as of the latest major GC (shardlimit_heap_live_bytes); 0 before the first. */
  liveHeapBytes: number;
  /** What V8 has reserved for its heap; RSS minus this is native memory (buffers, code, grpc). */
  heapTotalBytes: number;
  /** Memory of Buffers and other objects V8 tracks outside its heap (part of RSS - heap total). */
  externalBytes: number;
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
    liveHeapBytes: need("shardlimit_heap_live_bytes"),
    heapTotalBytes: need("nodejs_heap_size_total_bytes"),
    externalBytes: need("nodejs_external_memory_bytes"),
    handles: need("nodejs_active_handles_total"),
    lagP99Seconds: need("nodejs_eventloop_lag_p99_seconds"),
    cpuSeconds: need("process_cpu_seconds_total"),
    counters: m.get("shardlimit_counters"),
    clients: m.get("shardlimit_clients"),
    incarnation,
  };
}

export interface Thresholds {
  /** The live heap (heap used without one) fails when the end's minimum is over the start's by more than both of these. */
  heapGrowthFraction: number;
  heapGrowthBytes: number;
  /** For RSS outside V8's heap (RSS minus heap total), from mid-run to the end. */
  nativeGrowthFraction: number;
  nativeGrowthBytes: number;
  /** Handles fail when the end's median is over the start's by more than this. */
  handlesGrowth: number;
  /** Lag fails when the end's median p99 is over both start x this and `lagEndSeconds`. */
  lagFactor: number;
  lagEndSeconds: number;
}

export const THRESHOLDS: Thresholds = {
  heapGrowthFraction: 0.2,
  heapGrowthBytes: 20 * 2 ** 20,
  nativeGrowthFraction: 0.3,
  nativeGrowthBytes: 30 * 2 ** 20,
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
  /** Minimum of the non-zero values (undefined if no major GC was reported yet). */
  liveHeapBytes: number | undefined;
  heapTotalBytes: number;
  /** RSS minus heap total, minimum over the window. */
  nativeBytes: number;
  externalBytes: number;
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
    liveHeapBytes: in_.some((s) => s.liveHeapBytes > 0)
      ? Math.min(...in_.filter((s) => s.liveHeapBytes > 0).map((s) => s.liveHeapBytes))
      : undefined,
    heapTotalBytes: Math.min(...in_.map((s) => s.heapTotalBytes)),
    nativeBytes: Math.min(...in_.map((s) => s.rssBytes - s.heapTotalBytes)),
    externalBytes: Math.min(...in_.map((s) => s.externalBytes)),
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
  /** Why not judged: reported only (RSS as a whole), or the process restarted between the windows. */
  skipped?: string;
}

/**
 * Each figure's start, end and whether it stayed within the thresholds. RSS outside V8's heap is
 * judged from `mid` (the window in the middle of the run) to the end: the allocator's high-water
 * mark (malloc arenas, grpc's and the HTTP/2 sessions' native buffers) takes minutes to reach, longer than the
 * warm-up, so a start-to-end comparison fails on a plateau; a leak keeps rising through the
 * second half too.
 */
export function judge(
  start: Figures,
  end: Figures,
  mid: Figures | undefined,
  th: Thresholds = THRESHOLDS,
  memorySkipped?: string,
): Verdict[] {
  const grew = (a: number, b: number, frac: number, abs: number) => b - a > frac * a && b - a > abs;
  const row = (metric: string, a: number, b: number, flat: boolean, skipped = memorySkipped): Verdict =>
    skipped ? { metric, start: a, end: b, flat: true, skipped } : { metric, start: a, end: b, flat };
  const heap = (metric: string, a: number, b: number) =>
    row(metric, a, b, !grew(a, b, th.heapGrowthFraction, th.heapGrowthBytes));
  const out = [
    row(
      "rss",
      start.rssBytes,
      end.rssBytes,
      true,
      memorySkipped ?? "reported; judged as its two parts below",
    ),
    row(
      "heap total",
      start.heapTotalBytes,
      end.heapTotalBytes,
      true,
      memorySkipped ?? "reported: V8 sizes it to the garbage between major GCs",
    ),
    row(
      "rss - heap total",
      start.nativeBytes,
      end.nativeBytes,
      true,
      memorySkipped ?? (mid ? "reported; judged from mid-run below" : undefined),
    ),
    row(
      "  of which external",
      start.externalBytes,
      end.externalBytes,
      true,
      memorySkipped ?? "reported (Buffers and the like)",
    ),
  ];
  if (mid)
    out.push(
      row(
        "rss - heap total, mid-run to end",
        mid.nativeBytes,
        end.nativeBytes,
        !grew(mid.nativeBytes, end.nativeBytes, th.nativeGrowthFraction, th.nativeGrowthBytes),
      ),
    );
  else
    out[2] = row(
      "rss - heap total",
      start.nativeBytes,
      end.nativeBytes,
      !grew(start.nativeBytes, end.nativeBytes, th.nativeGrowthFraction, th.nativeGrowthBytes),
    );
  // The live heap is the measure; heap used's minimum (garbage included, so it depends on where
  // in the GC cycle the samples fell) is judged only when no major GC was reported.
  if (start.liveHeapBytes !== undefined && end.liveHeapBytes !== undefined) {
    out.push(
      row(
        "heap used",
        start.heapUsedBytes,
        end.heapUsedBytes,
        true,
        memorySkipped ?? "reported: includes garbage; the live heap is judged",
      ),
    );
    out.push(heap("live heap", start.liveHeapBytes, end.liveHeapBytes));
  } else out.push(heap("heap used", start.heapUsedBytes, end.heapUsedBytes));
  out.push(row("handles", start.handles, end.handles, end.handles - start.handles <= th.handlesGrowth));
  out.push({
    metric: "lag p99",
    start: start.lagP99Seconds,
    end: end.lagP99Seconds,
    flat: !(end.lagP99Seconds > th.lagFactor * start.lagP99Seconds && end.lagP99Seconds > th.lagEndSeconds),
  });
  return out;
}

export function mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

export function msOf(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms`;
}
