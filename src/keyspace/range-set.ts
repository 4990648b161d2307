/** A half-open range of ring points, [start, end). */
export interface Span {
  start: number;
  end: number;
}

/** `spans` sorted by start, overlapping and adjacent ones merged (a new array). */
export function normalize(spans: readonly Span[]): Span[] {
  const sorted = spans.filter((s) => s.end > s.start).sort((a, b) => a.start - b.start);
  const out: Span[] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last && s.start <= last.end) last.end = Math.max(last.end, s.end);
    else out.push({ start: s.start, end: s.end });
  }
  return out;
}

/** The points in both `a` and `b`. */
export function intersect(a: readonly Span[], b: readonly Span[]): Span[] {
  const x = normalize(a);
  const y = normalize(b);
  const out: Span[] = [];
  for (let i = 0, j = 0; i < x.length && j < y.length; ) {
    const start = Math.max(x[i]!.start, y[j]!.start);
    const end = Math.min(x[i]!.end, y[j]!.end);
    if (start < end) out.push({ start, end });
    if (x[i]!.end < y[j]!.end) i++;
    else j++;
  }
  return out;
}

/** The points in `a` and not in `b`. */
export function subtract(a: readonly Span[], b: readonly Span[]): Span[] {
  const y = normalize(b);
  const out: Span[] = [];
  for (const s of normalize(a)) {
    let at = s.start;
    for (const cut of y) {
      if (cut.end <= at) continue;
      if (cut.start >= s.end) break;
      if (cut.start > at) out.push({ start: at, end: cut.start });
      at = Math.max(at, cut.end);
      if (at >= s.end) break;
    }
    if (at < s.end) out.push({ start: at, end: s.end });
  }
  return out;
}
