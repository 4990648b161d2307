import type { Counter } from "../counter.js";
import type { Limit } from "../limit.js";
import type { RateAlgorithm } from "./types.js";
import { ceilMs, realignedStart, windowStart } from "./types.js";

/**
 * Cloudflare's sliding window: the previous window's count weighted by how much of it the
 * sliding window still covers, plus the current count. Two numbers per counter.
 * `t`: current window start, `x`: current count, `y`: previous window's count.
 */
function estimate(c: Counter, l: Limit, now: number): number {
  const elapsed = (now - c.t) / l.windowMs;
  return c.y * (1 - elapsed) + c.x;
}

export const slidingWindow: RateAlgorithm = {
  init(c, l, now) {
    c.t = windowStart(now, l.windowMs);
    c.x = 0;
    c.y = 0;
  },
  advance(c, l, now) {
    c.t = realignedStart(c.t, l.windowMs); // a counter handed over is shifted by its transit
    if (now >= c.t + l.windowMs || now < c.t) {
      const start = windowStart(now, l.windowMs);
      c.y = start === c.t + l.windowMs ? c.x : 0;
      c.x = 0;
      c.t = start;
    }
    c.expiresAt = c.x > 0 ? c.t + 2 * l.windowMs : c.t + l.windowMs;
  },
  available(c, l, now) {
    return l.limit - estimate(c, l, now);
  },
  consume(c, l, amount) {
    c.x = Math.max(0, c.x + amount);
    c.expiresAt = c.x > 0 ? c.t + 2 * l.windowMs : c.t + l.windowMs;
  },
  availableAt(c, l, amount, now) {
    const need = l.limit - amount;
    if (need < 0) return Number.POSITIVE_INFINITY;
    if (estimate(c, l, now) <= need) return now;
    if (c.x > need) {
      // Even with the previous window fully decayed this window holds too much: wait until the
      // current count, as next window's "previous", has decayed enough.
      return c.t + l.windowMs + ceilMs(l.windowMs * (1 - need / c.x));
    }
    return Math.max(now, c.t + ceilMs(l.windowMs * (1 - (need - c.x) / c.y)));
  },
  resetAt(c, l) {
    return c.x > 0 ? c.t + 2 * l.windowMs : c.t + l.windowMs;
  },
  refillPerMs(c, l) {
    return c.y / l.windowMs;
  },
  spendHorizonMs(c, l, now, intervalMs) {
    // What is left of the window is handed out within a few reports, as a counter deciding each
    // request admits until the limit: pacing it over the rest of an hour-long window would
    // starve bursts that the window has room for.
    return Math.max(1, Math.min(c.t + l.windowMs - now, 3 * intervalMs));
  },
};
