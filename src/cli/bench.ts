import { writeFileSync } from "node:fs";
import { Command, InvalidArgumentError } from "commander";
import { startRedisLimiterService } from "../loadtest/redis-limiter-service.js";
import { baseline } from "../loadtest/scenarios/baseline.js";
import { runAccuracy, type ScenarioResult } from "../sim/accuracy.js";

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError(`expected a positive integer, got ${v}`);
  return n;
}

function nonNegative(v: string): number {
  const n = Number(v);
  if (!(n >= 0 && n <= 10_000))
    throw new InvalidArgumentError(`expected milliseconds from 0 to 10000, got ${v}`);
  return n;
}

function probability(v: string): number {
  const n = Number(v);
  if (!(n >= 0 && n < 1))
    throw new InvalidArgumentError(`expected a probability from 0 to below 1, got ${v}`);
  return n;
}

function table(results: readonly ScenarioResult[]): string {
  const rows = results.map((r) => [
    r.pass ? "pass" : "FAIL",
    r.ratio.toFixed(4),
    r.target,
    String(Math.round(r.admitted)),
    String(Math.round(r.offered)),
    `${r.from_s}-${r.to_s} s`,
    `${r.sim_wall_ms} ms`,
    r.name + (r.detail ? `  ${JSON.stringify(r.detail)}` : ""),
  ]);
  const head = ["", "ratio", "target", "admitted", "offered", "measured", "wall", "scenario"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  return [line(head), ...rows.map(line)].join("\n");
}

function accuracyCommand(): Command {
  return new Command("accuracy")
    .description(
      "run the accuracy scenarios A-G: real gateway clients and real server code in a deterministic " +
        "simulation (virtual clock, in-memory network); ratio = admitted / the most that could rightly be admitted",
    )
    .option("--quick", "shorter simulated runs (20 s instead of 60 s for most scenarios)")
    .option(
      "--json <file>",
      "write { scenarios: [{ name, limit, offered, admitted, ratio, pass, ... }] } here",
    )
    .option("--seed <n>", "random seed of arrivals and network jitter", positiveInt, 1)
    .option("--only <letter>", "run only the scenario whose name starts with this letter")
    .option(
      "--delay-ms <ms>",
      "one-way network delay of every message (jitter: half of it more)",
      nonNegative,
    )
    .option("--loss <p>", "probability that a message is lost (0-1)", probability)
    .action(
      (flags: {
        quick?: boolean;
        json?: string;
        seed: number;
        only?: string;
        delayMs?: number;
        loss?: number;
      }) => {
        const results = runAccuracy({
          quick: flags.quick === true,
          seed: flags.seed,
          only: flags.only,
          delayMs: flags.delayMs,
          loss: flags.loss,
        });
        if (results.length === 0) {
          process.stderr.write(
            `shardlimit bench accuracy: no scenario starts with ${JSON.stringify(flags.only)}\n`,
          );
          process.exitCode = 2;
          return;
        }
        process.stdout.write(`${table(results)}\n`);
        if (flags.json) writeFileSync(flags.json, `${JSON.stringify({ scenarios: results }, null, 2)}\n`);
        const failed = results.filter((r) => !r.pass).length;
        process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
        if (failed > 0) process.exitCode = 1;
      },
    );
}

function baselineCommand(): Command {
  return new Command("baseline")
    .description(
      "shardlimit against Redis-backed limiters (rate-limiter-flexible; envoyproxy/ratelimit's INCRBY+EXPIRE) " +
        "on the same batched and sync workloads, with CPU seconds of every process; starts etcd, servers and redis-server",
    )
    .option("--servers <n>", "shardlimit servers", positiveInt, 2)
    .option("--gateways <n>", "load threads (each one gateway)", positiveInt, 2)
    .option("--duration <s>", "seconds per run", positiveInt, 10)
    .option("--quick", "3 s runs at lower rates")
    .option("--batched-rate <n>", "decisions/s offered to shardlimit in batched mode", positiveInt)
    .option("--redis-rate <n>", "decisions/s offered to the Redis limiters in batched mode", positiveInt)
    .option("--sync-rate <n>", "Check calls/s offered to every system", positiveInt)
    .option(
      "--json <file>",
      "write { results: [{ system, workload, decisions_per_s, cpu_s_per_s, p50_ms, p99_ms }] }",
    )
    .action(
      async (flags: {
        servers: number;
        gateways: number;
        duration: number;
        quick?: boolean;
        batchedRate?: number;
        redisRate?: number;
        syncRate?: number;
        json?: string;
      }) => {
        const quick = flags.quick === true;
        const results = await baseline({
          servers: flags.servers,
          threads: flags.gateways,
          seconds: quick ? 3 : flags.duration,
          keys: 10_000,
          batchedRate: flags.batchedRate ?? (quick ? 200_000 : 1_000_000),
          redisBatchedRate: flags.redisRate ?? (quick ? 10_000 : 30_000),
          syncRate: flags.syncRate ?? (quick ? 1_000 : 2_000),
          log: (l) => process.stderr.write(`${l}\n`),
        });
        if (flags.json) writeFileSync(flags.json, `${JSON.stringify({ results }, null, 2)}\n`);
        process.stdout.write(`${JSON.stringify({ results }, null, 2)}\n`);
      },
    );
}

/** The Redis-backed baseline as a service process; `bench baseline` starts it. */
function redisLimiterCommand(): Command {
  return new Command("redis-limiter")
    .description("(internal) a Redis-backed limiter service answering Check, the baseline for sync work")
    .requiredOption("--redis <url>", "redis://host:port")
    .option("--mode <mode>", "flexible | fixed-window", "flexible")
    .option("--limit <n>", "decisions per second per key", positiveInt, 1_000_000)
    .option("--port <n>", "gRPC port (0: any)", "0")
    .action(async (flags: { redis: string; mode: string; limit: number; port: string }) => {
      if (flags.mode !== "flexible" && flags.mode !== "fixed-window") {
        throw new InvalidArgumentError(`--mode must be flexible or fixed-window, got ${flags.mode}`);
      }
      const svc = await startRedisLimiterService({
        redisUrl: flags.redis,
        mode: flags.mode,
        limit: flags.limit,
        port: Number(flags.port),
      });
      process.stdout.write(`${JSON.stringify({ listening: svc.port })}\n`);
      process.once("SIGTERM", () => svc.stop().then(() => process.exit(0)));
    });
}

export function benchCommand(): Command {
  return new Command("bench")
    .description("benchmarks and measurements")
    .addCommand(accuracyCommand())
    .addCommand(baselineCommand())
    .addCommand(redisLimiterCommand(), { hidden: true });
}
