import type { Redis } from "ioredis";
import { RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";

/** A Redis-backed limiter as a gateway would use it: one Redis round trip per decision. */
export interface RedisBackedLimiter {
  readonly system: string;
  decide(key: string, cost: number): Promise<boolean>;
}

/** `rate-limiter-flexible`'s RateLimiterRedis (a Lua script per decision): `limit` per second. */
export function flexibleLimiter(redis: Redis, limit: number): RedisBackedLimiter {
  const rl = new RateLimiterRedis({ storeClient: redis, points: limit, duration: 1, keyPrefix: "rlf" });
  return {
    system: "redis: rate-limiter-flexible",
    async decide(key, cost) {
      try {
        await rl.consume(key, cost);
        return true;
      } catch (err) {
        // Over the limit is an answer, not a failure; anything else is a Redis error.
        if (err instanceof RateLimiterRes) return false;
        throw err;
      }
    },
  };
}

/**
 * envoyproxy/ratelimit's Redis algorithm: a fixed window per key and unit, INCRBY then EXPIRE in
 * one pipeline, over the limit when the new count exceeds it.
 */
export function fixedWindowLimiter(redis: Redis, limit: number, windowS = 1): RedisBackedLimiter {
  return {
    system: "redis: envoy-style fixed window (INCRBY+EXPIRE, pipelined)",
    async decide(key, cost) {
      const window = Math.floor(Date.now() / 1000 / windowS) * windowS;
      const k = `fw_${key}_${window}`;
      const res = await redis.pipeline().incrby(k, cost).expire(k, windowS).exec();
      const err = res?.[0]?.[0];
      if (err) throw err;
      return Number(res![0]![1]) <= limit;
    },
  };
}
