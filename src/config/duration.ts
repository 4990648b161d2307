/**
 * Durations as operators write them: `500ms`, `10s`, `2m`, `1h`, `1d`, or combined like `1m30s`
 * (Go's `time.ParseDuration` style, which Envoy users know). A bare number is rejected: whether
 * `10` means seconds or milliseconds is exactly the kind of guess a limit must not depend on.
 */

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

/** Milliseconds, or `undefined` if `text` is not a duration or is not a whole number of ms. */
export function parseDuration(text: string): number | undefined {
  if (text.length === 0) return undefined;
  let ms = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const m = PART.exec(text);
    if (!m) return undefined;
    ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  }
  const rounded = Math.round(ms);
  // Float error aside (`0.1s`), a fraction of a millisecond is not something we can honour.
  return Math.abs(ms - rounded) < 1e-6 ? rounded : undefined;
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
