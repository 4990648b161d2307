import { waitReady } from "../child.js";
import { type LoadResult, runLoad } from "../load.js";
import { startRedis } from "../redis.js";
import type { RedisMode } from "../redis-limiter-service.js";
import { spawnCli } from "../servers.js";
import { type Stack, startStack } from "../stack.js";
import { measured } from "./common.js";

export interface BaselineRow {
  system: string;
  workload: string;
  decisions_per_s: number;
  /** CPU seconds per wall second of every process of the run (generators, gateways, servers, etcd, Redis). */
  cpu_s_per_s: number;
  p50_ms: number;
  p99_ms: number;
  decisions_per_cpu_s: number;
  /** Send to answer (p50_ms and p99_ms count from each call's due time, timer lateness included). */
  service_p50_ms: number;
  service_p99_ms: number;
  target_per_s: number;
  errors: number;
  first_error?: string;
}

export interface BaselineOptions {
  servers: number;
  threads: number;
  seconds: number;
  keys: number;
  /** Offered decisions/s: batched shardlimit, batched Redis, sync (both systems, the same). */
  batchedRate: number;
  redisBatchedRate: number;
  syncRate: number;
  log: (line: string) => void;
  /** A cluster to use; else one is started and stopped. */
  stack?: Stack;
}

const REDIS_LIMIT = 1_000_000;

function row(
  system: string,
  workload: string,
  r: LoadResult,
  cpu: { cpuSeconds: number; wallSeconds: number },
): BaselineRow {
  const cpuPerS = cpu.cpuSeconds / cpu.wallSeconds;
  return {
    system,
    workload,
    decisions_per_s: Math.round(r.achievedPerSec),
    cpu_s_per_s: Math.round(cpuPerS * 1000) / 1000,
    p50_ms: r.latency.p50Us / 1000,
    p99_ms: r.latency.p99Us / 1000,
    decisions_per_cpu_s: Math.round(r.achievedPerSec / cpuPerS),
    service_p50_ms: r.service.p50Us / 1000,
    service_p99_ms: r.service.p99Us / 1000,
    target_per_s: r.targetPerSec,
    errors: r.errors,
    ...(r.firstError ? { first_error: r.firstError } : {}),
  };
}

/** The Redis-backed limiter as a service process (what envoyproxy/ratelimit is), for sync work. */
async function redisService(redisUrl: string, mode: RedisMode) {
  const c = spawnCli([
    "bench",
    "redis-limiter",
    "--redis",
    redisUrl,
    "--mode",
    mode,
    "--limit",
    String(REDIS_LIMIT),
  ]);
  await waitReady(c, "the Redis limiter service", () => c.lines.some((l) => l.includes('"listening"')));
  const port = JSON.parse(c.lines.find((l) => l.includes('"listening"'))!).listening as number;
  return { address: `127.0.0.1:${port}`, pid: c.pid, stop: () => c.stop("SIGTERM") };
}

/**
 * shardlimit and the Redis-backed limiters a user would pick instead, on the same workloads in
 * one run: batched (gateways decide; shardlimit locally with reports, Redis one round trip per
 * decision) and sync (a service's Check per decision, at one rate for every system).
 */
export async function baseline(opts: BaselineOptions): Promise<BaselineRow[]> {
  const rows: BaselineRow[] = [];
  const stack = opts.stack ?? (await startStack({ servers: opts.servers }));
  const redis = await startRedis();
  const basePids = () => [process.pid, ...stack.pids(), redis.pid];
  const measure = async (
    system: string,
    workload: string,
    extraPids: number[],
    load: (onStart: () => void) => Promise<LoadResult>,
  ) => {
    // CPU measured from when every load thread is connected and warmed up.
    const m = await measured(() => [...basePids(), ...extraPids], load);
    if (process.env.SHARDLIMIT_BENCH_DEBUG) opts.log(JSON.stringify(m.byPid));
    const out = row(system, workload, m.load, m);
    rows.push(out);
    opts.log(
      `${system} / ${workload}: ${out.decisions_per_s.toLocaleString("en-US")} decisions/s, ` +
        `${out.cpu_s_per_s} CPU-s/s, ${out.decisions_per_cpu_s.toLocaleString("en-US")} per CPU-s, ` +
        `p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms (send to answer: ${out.service_p50_ms}, ${out.service_p99_ms} ms), ${out.errors} errors`,
    );
  };
  try {
    const common = { threads: opts.threads, seconds: opts.seconds, keys: opts.keys };
    await measure("shardlimit", "batched (gateway decide, reports every 100 ms)", [], (onStart) =>
      runLoad({
        ...common,
        onStart,
        ratePerSec: opts.batchedRate,
        specFor: (i) => ({
          kind: "shardlimit-batched",
          servers: stack.addresses(),
          clientId: `bench-gw-${i}`,
        }),
      }),
    );
    for (const mode of ["flexible", "fixed-window"] as const) {
      await measure(
        mode === "flexible" ? "redis: rate-limiter-flexible" : "redis: envoy-style fixed window",
        "batched (gateway decide, one Redis round trip each, auto-pipelined)",
        [],
        (onStart) =>
          runLoad({
            ...common,
            onStart,
            ratePerSec: opts.redisBatchedRate,
            specFor: () => ({ kind: "redis-batched", redisUrl: redis.url, mode, limit: REDIS_LIMIT }),
          }),
      );
    }
    await measure("shardlimit", "sync (Check, 1 key per call, sent to its owner)", [], (onStart) =>
      runLoad({
        ...common,
        onStart,
        ratePerSec: opts.syncRate,
        // The lean HTTP/2 client for both systems' sync calls: grpc-js's client costs ~1 ms a call
        // on this machine and would set both tails by itself.
        specFor: () => ({ kind: "check-h2", servers: stack.addresses(), route: true }),
      }),
    );
    for (const mode of ["flexible", "fixed-window"] as const) {
      const svc = await redisService(redis.url, mode);
      try {
        await measure(
          mode === "flexible" ? "redis: rate-limiter-flexible" : "redis: envoy-style fixed window",
          "sync (Check, 1 key per call, via a limiter service)",
          [svc.pid],
          (onStart) =>
            runLoad({
              ...common,
              onStart,
              ratePerSec: opts.syncRate,
              specFor: () => ({ kind: "check-h2", servers: [svc.address], route: false }),
            }),
        );
      } finally {
        await svc.stop();
      }
    }
  } finally {
    await redis.stop();
    if (!opts.stack) await stack.stop();
  }
  return rows;
}
