import { waitReady } from "../../testkit/child.js";
import { spawnCli } from "../../testkit/cli.js";
import { startRedis } from "../../testkit/redis.js";
import { type LoadResult, type LoadThreads, poolLoads, runLoad, startLoad } from "../load.js";
import type { RedisMode } from "../redis-limiter-service.js";
import { type Stack, startStack } from "../stack.js";
import type { WorkloadSpec } from "../workloads.js";
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
  /** Measured seconds per system of sync work, over all rounds. */
  syncSeconds: number;
  /** Sync rows are measured in this many rounds, the systems taking turns (pooled per system). */
  syncRounds: number;
  /** Unmeasured calls before each system's first round (its load thread is kept between rounds). */
  syncWarmupSeconds: number;
  /**
   * Rounds run first and not counted: in the first round after processes start every system's
   * tail is several times its later one (start-up garbage collected, JIT still settling).
   */
  syncSettleRounds: number;
  log: (line: string) => void;
  /** A cluster to use; else one is started and stopped. */
  stack?: Stack;
}

const REDIS_LIMIT = 1_000_000;

/** How the report names each Redis-backed limiter. */
const REDIS_SYSTEM: Record<RedisMode, string> = {
  flexible: "redis: rate-limiter-flexible",
  "fixed-window": "redis: envoy-style fixed window",
};
const REDIS_MODES = Object.keys(REDIS_SYSTEM) as RedisMode[];

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
  const report = (out: BaselineRow) => {
    rows.push(out);
    opts.log(
      `${out.system} / ${out.workload}: ${out.decisions_per_s.toLocaleString("en-US")} decisions/s, ` +
        `${out.cpu_s_per_s} CPU-s/s, ${out.decisions_per_cpu_s.toLocaleString("en-US")} per CPU-s, ` +
        `p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms (send to answer: ${out.service_p50_ms}, ${out.service_p99_ms} ms), ${out.errors} errors`,
    );
  };
  const measure = async (
    system: string,
    workload: string,
    extraPids: number[],
    load: (onStart: () => void) => Promise<LoadResult>,
  ) => {
    // CPU measured from when every load thread is connected and warmed up.
    const m = await measured(() => [...basePids(), ...extraPids], load);
    if (process.env.SHARDLIMIT_BENCH_DEBUG) opts.log(JSON.stringify(m.byPid));
    report(row(system, workload, m.load, m));
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
    for (const mode of REDIS_MODES) {
      await measure(
        REDIS_SYSTEM[mode],
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
    await syncRows(opts, stack, redis.url, basePids, report);
  } finally {
    await redis.stop();
    if (!opts.stack) await stack.stop();
  }
  return rows;
}

/**
 * Sync work, shardlimit's Check against the Redis-backed services at one rate: a warm-up first,
 * then rounds in which the systems take turns, pooled per system, so
 * that a slow spell of the shared machine lands on all of them rather than on whichever ran then.
 */
async function syncRows(
  opts: BaselineOptions,
  stack: Stack,
  redisUrl: string,
  basePids: () => number[],
  report: (row: BaselineRow) => void,
): Promise<void> {
  const services = await Promise.all(
    REDIS_MODES.map(async (mode) => ({ mode, ...(await redisService(redisUrl, mode)) })),
  );
  try {
    const systems: { system: string; workload: string; spec: WorkloadSpec; pids: number[] }[] = [
      {
        system: "shardlimit",
        workload: "sync (Check, 1 key per call, sent to its owner)",
        // The lean HTTP/2 client for every system's sync calls: grpc-js's client costs ~1 ms a
        // call on this machine and would set both tails by itself.
        spec: { kind: "check-h2", servers: stack.addresses(), route: true },
        pids: [],
      },
      ...services.map((svc): (typeof systems)[number] => ({
        system: REDIS_SYSTEM[svc.mode],
        workload: "sync (Check, 1 key per call, via a limiter service)",
        spec: { kind: "check-h2", servers: [svc.address], route: false },
        pids: [svc.pid],
      })),
    ];
    const runs = systems.map(() => ({ loads: [] as LoadResult[], cpuSeconds: 0, wallSeconds: 0 }));
    // One load thread per system, kept between rounds: warmed once, each round on a warm client.
    // One thread, because 1,000 calls/s is a small part of what the lean client sends, and fewer
    // threads on 2 CPUs means less of the generator's own scheduling in the tails.
    const threads: LoadThreads[] = [];
    try {
      for (const sys of systems) {
        threads.push(
          await startLoad({
            threads: 1,
            seconds: Math.max(1, opts.syncSeconds / opts.syncRounds),
            keys: opts.keys,
            ratePerSec: opts.syncRate,
            warmupSeconds: opts.syncWarmupSeconds,
            specFor: () => sys.spec,
          }),
        );
      }
      for (let round = 0; round < opts.syncSettleRounds; round++) {
        for (const t of threads) await t.run();
      }
      for (let round = 0; round < opts.syncRounds; round++) {
        for (const [i, sys] of systems.entries()) {
          const m = await measured(
            () => [...basePids(), ...sys.pids],
            (onStart) => threads[i]!.run({ onStart }),
          );
          runs[i]!.loads.push(m.load);
          runs[i]!.cpuSeconds += m.cpuSeconds;
          runs[i]!.wallSeconds += m.wallSeconds;
        }
      }
    } finally {
      await Promise.all(threads.map((t) => t.close()));
    }
    for (const [i, sys] of systems.entries()) {
      const r = runs[i]!;
      report(row(sys.system, sys.workload, poolLoads(r.loads), r));
    }
  } finally {
    await Promise.all(services.map((s) => s.stop()));
  }
}
