import type { RateAlgorithm } from "./types.js";
import { realignedStart, windowStart } from "./types.js";

/** Fixed window aligned to the epoch. `t`: window start, `x`: units counted in it. */
export const fixedWindow: RateAlgorithm = {
  init(c, l, now) {
    c.t = windowStart(now, l.windowMs);
    c.x = 0;
  },
  advance(c, l, now) {
    c.t = realignedStart(c.t, l.windowMs); // a counter handed over is shifted by its transit
    if (now >= c.t + l.windowMs || now < c.t) {
      c.t = windowStart(now, l.windowMs);
      c.x = 0;
    }
    c.expiresAt = c.t + l.windowMs;
  },
  available(c, l) {
    return l.limit - c.x;
  },
  consume(c, _l, amount) {
    c.x = Math.max(0, c.x + amount);
  },
  availableAt(c, l, amount, now) {
    if (amount > l.limit) return Number.POSITIVE_INFINITY;
    return l.limit - c.x >= amount ? now : c.t + l.windowMs;
  },
  resetAt(c, l) {
    return c.t + l.windowMs;
  },
  refillPerMs() {
    return 0;
  },
  spendHorizonMs(c, l, now, intervalMs) {
    // What is left of the window is handed out within a few reports, as a counter deciding each
    // request admits until the limit: pacing it over the rest of an hour-long window would
    // starve bursts that the window has room for.
    return Math.max(1, Math.min(c.t + l.windowMs - now, 3 * intervalMs));
  },
};
