import { writeFileSync } from "node:fs";
import { Command, InvalidArgumentError } from "commander";
import type { runBench } from "../loadtest/run.js";
import { SCENARIOS, type ScenarioName } from "../loadtest/scenario-names.js";
import { runAccuracy, type ScenarioResult } from "../sim/accuracy.js";

/**
 * Packages only the load test uses: devDependencies here and optional peers of the published
 * package, so `npm install shardlimit` (the gateway library) does not install them.
 */
export const LOAD_TEST_PACKAGES = ["ioredis", "rate-limiter-flexible", "cli-progress", "hdr-histogram-js"];

/**
 * Loads load-test code on first use (never at start-up, so the CLI's other commands run without
 * those packages); if one is missing, says what to install and exits 1.
 */
async function loadTestCode<T>(load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const missing = LOAD_TEST_PACKAGES.find(
      (p) => e.code === "ERR_MODULE_NOT_FOUND" && (e.message ?? "").includes(`'${p}'`),
    );
    if (!missing) throw err;
    process.stderr.write(
      `shardlimit bench needs packages that \`npm install shardlimit\` leaves out (${missing} is missing). ` +
        `Install them next to shardlimit:\n  npm install ${LOAD_TEST_PACKAGES.join(" ")}\n`,
    );
    process.exit(1);
  }
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError(`expected a positive integer, got ${v}`);
  return n;
}

function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new InvalidArgumentError(`expected a whole number of 0 or more, got ${v}`);
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

interface LoadFlags {
  servers: number;
  gateways: number;
  duration: number;
  quick?: boolean;
  json?: string;
  html?: string;
  target?: string[];
}

/** The flags every load scenario takes. */
function withLoadFlags(c: Command): Command {
  return c
    .option("--servers <n>", "shardlimit servers to start", positiveInt, 2)
    .option("--gateways <n>", "load threads (each one gateway)", positiveInt, 2)
    .option("--duration <s>", "seconds per measured run", positiveInt, 10)
    .option("--quick", "short runs at low rates (all scenarios in under 2 minutes)")
    .option("--json <file>", "write the report as JSON")
    .option("--html <file>", "write the report as an HTML page with charts")
    .option(
      "--target <list>",
      "drive these servers (host:port, comma-separated) instead of starting a cluster",
      (v: string) =>
        v
          .split(",")
          .map((x) => x.trim())
          .filter((x) => x !== ""),
    );
}

async function runFlags(scenarios: readonly ScenarioName[], flags: LoadFlags): Promise<void> {
  if (flags.target && scenarios.some((s) => s === "failover" || s === "scale" || s === "baseline")) {
    const bad = scenarios.filter((s) => s === "failover" || s === "scale" || s === "baseline");
    throw new InvalidArgumentError(
      `--target drives accuracy, throughput and sync; ${bad.join(", ")} start their own processes`,
    );
  }
  const { runBench } = await loadTestCode(() => import("../loadtest/run.js"));
  const report = await runBench({
    scenarios,
    quick: flags.quick === true,
    servers: flags.servers,
    gateways: flags.gateways,
    duration: flags.duration,
    json: flags.json,
    html: flags.html,
    target: flags.target,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(summary(report), null, 2)}\n`);
}

/** The headline figures of a report, for the terminal. */
function summary(r: Awaited<ReturnType<typeof runBench>>): Record<string, unknown> {
  const out: Record<string, unknown> = { timings_s: r.timings };
  if (r.accuracy) {
    out.accuracy = {
      loopback: Object.fromEntries(r.accuracy.loopback.map((x) => [x.name[0], x.ratio])),
      simulation: Object.fromEntries(r.accuracy.simulation.map((x) => [x.name[0], x.ratio])),
    };
  }
  if (r.throughput) out.throughput = r.throughput;
  if (r.sync)
    out.sync = {
      knee: r.sync.knee,
      rows: r.sync.rows.map((x) => `${x.api} ${x.target_per_s}/s: p50 ${x.p50_ms} ms, p99 ${x.p99_ms} ms`),
    };
  if (r.failover)
    out.failover = r.failover.map((f) => ({
      name: f.name,
      batched_errors: f.batched_errors,
      sync_errors: f.sync_errors,
      recovered_after_ms: f.recovered_after_ms,
      cpu_s_per_s: f.cpu_s_per_s,
    }));
  if (r.scale) out.scale = r.scale;
  if (r.results) out.results = r.results;
  return out;
}

function scenarioCommand(name: ScenarioName, description: string): Command {
  return withLoadFlags(new Command(name).description(description)).action((flags: LoadFlags) =>
    runFlags([name], flags),
  );
}

/** Issue 16: shardlimit on each transport against do-nothing grpc-js and node:http2 servers. */
function syncCompareCommand(): Command {
  return new Command("sync-compare")
    .description(
      "ShouldRateLimit (two descriptors) and Check on shardlimit (lean and grpc-js transports), a do-nothing grpc-js server and a do-nothing node:http2 server: calls/s and server and generator CPU per call in interleaved closed-loop rounds (h2load when installed, else the Node client), then P50/P99/P99.9/max at half of each one's maximum (open loop, the same generator)",
    )
    .option("--seconds <s>", "seconds of each closed-loop round", positiveInt, 5)
    .option("--rounds <n>", "interleaved closed-loop rounds (medians and ranges over them)", positiveInt, 3)
    .option("--warm-seconds <s>", "seconds of each system's closed-loop warm-up", positiveInt, 2)
    .option("--open-seconds <s>", "seconds of each open-loop run at half rate (0: none)", nonNegativeInt, 10)
    .option(
      "--worst-seconds <s>",
      "seconds of the worst-call runs, shardlimit lean and do-nothing node:http2 (0: none)",
      nonNegativeInt,
      0,
    )
    .option(
      "--open-rate <n>",
      "one open-loop rate (calls/s) for every system instead of half of each one's maximum",
      positiveInt,
    )
    .option("--clients <n>", "connections", positiveInt, 4)
    .option("--streams <n>", "calls in flight on each connection (closed loop)", positiveInt, 16)
    .option("--generator <g>", "h2load, node, or auto (h2load when installed): closed and open loops", "auto")
    .option(
      "--open-connections <n>",
      "connections of the open loop with h2load (opened 1 ms apart)",
      positiveInt,
      16,
    )
    .option("--request <name>", "only ShouldRateLimit or Check")
    .option(
      "--workers <list>",
      "also shardlimit lean with serve --workers n, for each n in this comma-separated list",
    )
    .option("--lean-only", "only shardlimit lean (and --workers) against the do-nothing node:http2 server")
    .option(
      "--server-args <flags>",
      'more serve flags for every shardlimit system, space-separated (e.g. "--heap-growing-percent 0"; the servers do not read SHARDLIMIT_* from this environment)',
    )
    .option("--json <file>", "write the figures as JSON")
    .action(
      async (flags: {
        seconds: number;
        rounds: number;
        warmSeconds: number;
        openSeconds: number;
        worstSeconds: number;
        openRate?: number;
        clients: number;
        streams: number;
        openConnections: number;
        generator: string;
        request?: string;
        workers?: string;
        leanOnly?: boolean;
        serverArgs?: string;
        json?: string;
      }) => {
        const fail = (msg: string) => {
          process.stderr.write(`${msg}\n`);
          process.exitCode = 2;
        };
        if (!["auto", "h2load", "node"].includes(flags.generator)) {
          return fail(`--generator must be auto, h2load or node, not ${flags.generator}`);
        }
        if (flags.request !== undefined && !["ShouldRateLimit", "Check"].includes(flags.request)) {
          return fail(`--request must be ShouldRateLimit or Check, not ${flags.request}`);
        }
        const workers = flags.workers?.split(",").map((w) => Number(w.trim()));
        if (workers?.some((w) => !Number.isInteger(w) || w < 2 || w > 64)) {
          return fail(`--workers must list whole numbers from 2 to 64, not ${flags.workers}`);
        }
        const { runSyncCompare, formatSyncCompare } = await loadTestCode(
          () => import("../loadtest/sync-compare.js"),
        );
        const r = await runSyncCompare({
          ...flags,
          generator: flags.generator as "auto" | "h2load" | "node",
          requests: flags.request === undefined ? undefined : [flags.request as "ShouldRateLimit" | "Check"],
          workers,
          serverArgs: flags.serverArgs?.split(/\s+/).filter((a) => a !== ""),
          log: (l) => process.stderr.write(`${l}\n`),
        });
        process.stdout.write(`${formatSyncCompare(r)}\n`);
        if (flags.json) writeFileSync(flags.json, `${JSON.stringify(r, null, 2)}\n`);
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
      const { startRedisLimiterService } = await loadTestCode(
        () => import("../loadtest/redis-limiter-service.js"),
      );
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

/**
 * Issue 14: overload protection with real processes, one named scenario each (`--only`): `pool`
 * (pool utilisation, its modes and the feedback controller; loadtest/scenarios/pool-overload.ts),
 * `host-guard` (a gateway's host guard on its own CPU, with and without it; loadtest/overload.ts),
 * `global` (a global limit over three regional clusters and a global one; loadtest/scenarios/global-regions.ts).
 */
const OVERLOAD_SCENARIOS: Record<
  string,
  (o: { seconds: number; log: (l: string) => void }) => Promise<{ name: string; pass: boolean }>
> = {
  pool: async (o) =>
    (await loadTestCode(() => import("../loadtest/scenarios/pool-overload.js"))).runPoolOverload(o),
  // Its phases are its own (5 s, 10 s, 7 s; --quick: 3 s, 6 s, 4 s), not --duration.
  "host-guard": async (o) => {
    const { OVERLOAD } = await loadTestCode(() => import("../loadtest/overload.js"));
    const r = await OVERLOAD["host-guard"]!(o.seconds <= 6 ? { phases: [3, 6, 4] } : {});
    o.log(`${r.pass ? "pass" : "FAIL"}  ${r.name}\n  target: ${r.target}`);
    return r;
  },
  // Scenario Q over three regional clusters and a global one (loadtest/scenarios/global-regions.ts);
  // its phases are its own (--quick: shorter steady and after phases, the cut still 10 s).
  global: async (o) => {
    const { runGlobalRegions } = await loadTestCode(() => import("../loadtest/scenarios/global-regions.js"));
    const r = await runGlobalRegions({
      log: o.log,
      ...(o.seconds <= 6 ? { warmS: 3, steadyS: 6, afterS: 3, killS: 8 } : {}),
    });
    o.log(
      `${r.pass ? "pass" : "FAIL"}  ${r.name}\n  target: ${r.target}\n  ${r.generator_lag.verdict}` +
        r.failures.map((x) => `\n  ${x}`).join(""),
    );
    return r;
  },
};

function overloadCommand(): Command {
  return new Command("overload")
    .description(
      "overload protection with real server processes over loopback (issue 14): " +
        `scenarios ${Object.keys(OVERLOAD_SCENARIOS).join(", ")}`,
    )
    .option("--only <name>", "run only this scenario")
    .option("--duration <s>", "seconds per scenario", positiveInt, 12)
    .option("--quick", "6 s per scenario")
    .option("--json <file>", "write { scenarios: [...] } here")
    .action(async (flags: { only?: string; duration: number; quick?: boolean; json?: string }) => {
      const names = Object.keys(OVERLOAD_SCENARIOS).filter(
        (n) => flags.only === undefined || n === flags.only,
      );
      if (names.length === 0) {
        throw new InvalidArgumentError(
          `--only ${flags.only}: no such overload scenario (${Object.keys(OVERLOAD_SCENARIOS).join(", ")})`,
        );
      }
      const seconds = flags.quick ? 6 : flags.duration;
      const results = [];
      for (const n of names) {
        results.push(await OVERLOAD_SCENARIOS[n]!({ seconds, log: (l) => process.stderr.write(`${l}\n`) }));
      }
      process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      if (flags.json) writeFileSync(flags.json, `${JSON.stringify({ scenarios: results }, null, 2)}\n`);
      if (results.some((r) => !r.pass)) process.exitCode = 1;
    });
}

export function benchCommand(): Command {
  return (
    withLoadFlags(
      new Command("bench").description(
        "load-test harness: with no scenario, runs them all (accuracy, throughput, sync, failover, scale, baseline); " +
          "starts etcd, servers and redis-server on loopback itself",
      ),
    )
      // Each scenario takes the same flags itself: `bench sync --quick` means the sync scenario's.
      .enablePositionalOptions()
      .action((flags: LoadFlags) => runFlags(SCENARIOS, flags))
      .addCommand(accuracyCommand())
      .addCommand(overloadCommand())
      .addCommand(syncCompareCommand())
      .addCommand(
        scenarioCommand(
          "throughput",
          "batched mode end to end: gateways deciding, servers ingesting reports",
        ),
      )
      .addCommand(
        scenarioCommand("sync", "Check and ShouldRateLimit at rising open-loop rates, to find the knee"),
      )
      .addCommand(
        scenarioCommand("failover", "SIGKILL of a server mid-run, then a rolling restart, under load"),
      )
      .addCommand(scenarioCommand("scale", "the same batched load on 1, 2, ... servers"))
      .addCommand(
        scenarioCommand(
          "baseline",
          "shardlimit against Redis-backed limiters (rate-limiter-flexible; envoyproxy/ratelimit's INCRBY+EXPIRE) on the same " +
            "batched and sync workloads, CPU seconds of every process; writes { results: [...] } with --json",
        ),
      )
      .addCommand(redisLimiterCommand(), { hidden: true })
  );
}
