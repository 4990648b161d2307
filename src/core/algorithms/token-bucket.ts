import type { RateAlgorithm } from "./types.js";
import { ceilMs } from "./types.js";

/**
 * Token bucket of capacity `burst` refilled at `limit` per window. The balance may go negative
 * (batched reports of traffic already admitted, costs settled above their estimate), and the
 * debt is paid back by refill before anything more is admitted.
 * `t`: time of last refill, `x`: tokens.
 */
/** Reports over which a token bucket's balance or debt is evened out in batched mode. */
const HORIZON_INTERVALS = 1;

export const tokenBucket: RateAlgorithm = {
  init(c, l, now) {
    c.t = now;
    c.x = l.burst;
  },
  advance(c, l, now) {
    if (now > c.t) {
      c.x = Math.min(l.burst, c.x + ((now - c.t) * l.limit) / l.windowMs);
      c.t = now;
    } else if (c.x > l.burst) {
      c.x = l.burst; // the burst was lowered by a config change
    }
    c.expiresAt = c.t + ceilMs(((l.burst - c.x) * l.windowMs) / l.limit);
  },
  available(c) {
    return c.x;
  },
  consume(c, l, amount) {
    c.x = Math.min(l.burst, c.x - amount);
    c.expiresAt = c.t + ceilMs(((l.burst - c.x) * l.windowMs) / l.limit);
  },
  availableAt(c, l, amount, now) {
    if (amount > l.burst) return Number.POSITIVE_INFINITY;
    if (c.x >= amount) return now;
    return now + ceilMs(((amount - c.x) * l.windowMs) / l.limit);
  },
  resetAt(c, l, now) {
    return now + ceilMs(((l.burst - c.x) * l.windowMs) / l.limit);
  },
  refillPerMs(_c, l) {
    return l.limit / l.windowMs;
  },
  spendHorizonMs(_c, l, _now, intervalMs) {
    // A bucket's balance is there to be spent at once (that is what a burst is), and a debt must
    // stop admission within a few reports: a refill-length horizon would let a debt of a whole
    // window build up before grants reach zero (costly requests overdraw a grant).
    return Math.min(l.windowMs, HORIZON_INTERVALS * intervalMs);
  },
};
