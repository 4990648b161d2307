import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import type { CheckRequest, CheckResponse } from "../protocol/messages.js";
import { RATE_LIMITER_SERVICE, serviceDefinition } from "../protocol/proto.js";
import { fixedWindowLimiter, flexibleLimiter, type RedisBackedLimiter } from "./redis-limiters.js";

export type RedisMode = "flexible" | "fixed-window";

/**
 * The classic design as a baseline: a rate-limit service in front of one Redis, answering
 * shardlimit's own `Check` (so the same load generator drives both), each item one Redis round
 * trip. What envoyproxy/ratelimit is, with `rate-limiter-flexible` or its own fixed window.
 */
export async function startRedisLimiterService(opts: {
  redisUrl: string;
  mode: RedisMode;
  limit: number;
  port: number;
}): Promise<{ port: number; stop(): Promise<void> }> {
  const redis = new Redis(opts.redisUrl, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
  const limiter: RedisBackedLimiter =
    opts.mode === "flexible" ? flexibleLimiter(redis, opts.limit) : fixedWindowLimiter(redis, opts.limit);
  const server = new grpc.Server();
  const check: grpc.handleUnaryCall<CheckRequest, CheckResponse> = (call, callback) => {
    const items = call.request.items;
    Promise.all(items.map((it) => limiter.decide(it.key, it.cost || 1))).then(
      (allowed) => callback(null, { generation: 0, results: allowed.map((a) => ({ allowed: a })) }),
      (err: Error) => callback({ code: grpc.status.UNAVAILABLE, details: err.message }, null),
    );
  };
  const unimplemented: grpc.handleUnaryCall<unknown, unknown> = (_c, cb) =>
    cb({ code: grpc.status.UNIMPLEMENTED, details: "the Redis baseline answers Check only" }, null);
  server.addService(serviceDefinition(RATE_LIMITER_SERVICE), {
    Check: check,
    ReportAndGetPolicy: unimplemented,
    Acquire: unimplemented,
    Release: unimplemented,
    Settle: unimplemented,
    GetClusterView: unimplemented,
    GetLimits: unimplemented,
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    port,
    async stop() {
      await new Promise<void>((r) => server.tryShutdown(() => r()));
      redis.disconnect();
    },
  };
}
