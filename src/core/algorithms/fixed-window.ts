import type { RateAlgorithm } from "./types.js";
import { windowStart } from "./types.js";

/** Fixed window aligned to the epoch. `t`: window start, `x`: units counted in it. */
export const fixedWindow: RateAlgorithm = {
  init(c, l, now) {
    c.t = windowStart(now, l.windowMs);
    c.x = 0;
  },
  advance(c, l, now) {
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
  spendHorizonMs(c, l, now) {
    return Math.max(1, c.t + l.windowMs - now);
  },
};
