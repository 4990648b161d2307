/**
 * A fixed-window length for tests that count exactly across real time on real server processes.
 *
 * Fixed windows start on the epoch (`now - now % window`), so a test that charges a `unit: hour`
 * key for half a minute and then asserts the exact remaining fails whenever it runs across the
 * hour: a fresh window counts from zero. CI did exactly that once at 17:00 (a rolling restart's
 * key at 999,999 remaining after 145 admitted), which looked like lost counts.
 *
 * The answer is a window of whole seconds near `aboutSeconds` whose current window still has at
 * least `clearMs` to run. A window one second longer moves the next boundary by about
 * (windows since the epoch) seconds modulo its length, effectively at random, so a few steps find
 * one; the result is written as `window: <n>s` in the rule.
 */
export function clearWindowSeconds(clearMs: number, aboutSeconds = 3600, now = Date.now()): number {
  if (!(clearMs > 0) || clearMs >= aboutSeconds * 500) {
    throw new RangeError(`clearMs must be above 0 and under half of ${aboutSeconds} s, got ${clearMs}`);
  }
  for (let w = aboutSeconds; ; w++) {
    const ms = w * 1000;
    if (ms - (now % ms) >= clearMs) return w;
  }
}
