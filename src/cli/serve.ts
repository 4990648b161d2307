import { availableParallelism, hostname } from "node:os";
import { Command, Option } from "commander";
import { type Logger, pino } from "pino";
import { applyHeapGrowing, DEFAULT_HEAP_GROWING_PERCENT, workerNodeFlags } from "../app/heap.js";
import { DEFAULT_DRAIN_TIMEOUT_MS, startServer } from "../app/serve.js";
import { startWorkers } from "../app/workers.js";
import { DEFAULT_HANDOFF_TIMEOUT_MS } from "../cluster/handoff.js";
import { DEFAULT_REPLICATE_INTERVAL_MS } from "../cluster/replicator.js";
import { ConfigError } from "../config/errors.js";
import { OptionsError } from "../core/errors.js";
import { InputLimitsSchema } from "../protocol/input-limits.js";
import { DEFAULT_TRANSPORT, TRANSPORTS, type Transport } from "../server/lean.js";
import {
  type EtcdAccessFlagValues,
  etcdAccessFlags,
  etcdAccessOf,
  etcdFlag,
  leaseTtlFlag,
  loadIntervalFlag,
  logLevelFlag,
  prefixFlag,
  rebalanceIntervalFlag,
} from "./common-options.js";
import { type EnvoyFlagValues, envoyFlags, envoyOptionsOf } from "./envoy-options.js";
import { type GlobalTierFlags, globalTierFlags, globalTierSettings } from "./global-options.js";
import { intOption, memberIdOption, portOption } from "./options.js";
import {
  listenerTlsFlags,
  listenerTlsNames,
  listenerTlsOf,
  peerServerNameFlag,
  tlsReloadIntervalFlag,
} from "./tls-options.js";

interface ServeFlags extends EtcdAccessFlagValues, EnvoyFlagValues, GlobalTierFlags {
  config?: string;
  limitsFrom: "file" | "etcd";
  otel?: boolean;
  grpcHost: string;
  grpcPort: number;
  httpHost: string;
  httpPort: number;
  logLevel: string;
  maxCounters: number;
  maxBatch: number;
  maxKeyLength: number;
  shutdownGrace: number;
  etcd?: string[];
  prefix: string;
  id?: string;
  advertiseAddress?: string;
  leaseTtl: number;
  assigner: boolean;
  handoffTimeout: number;
  replicateInterval: number;
  drainTimeout: number;
  allowLimitRemoval: boolean;
  loadInterval: number;
  rebalanceInterval: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsClientAuth?: "none" | "request" | "require";
  peerServerName?: string;
  tlsReloadInterval: number;
  authFile?: string;
  tokenFile?: string;
  reflection: boolean;
  transport: Transport;
  limitsRead: "anyone" | "authenticated";
  rlqsConfig?: string;
  workers: number;
  heapGrowingPercent: number;
}

export function serveCommand(): Command {
  const tls = listenerTlsFlags("tls", "this server's");
  const etcdAccess = etcdAccessFlags();
  const cmd = new Command("serve")
    .description(
      "run a rate-limit server: standalone (owns every key) or, with --etcd, a member of a cluster",
    )
    .addOption(
      new Option(
        "-c, --config <path>",
        "limit config: a YAML file or a directory of them (required unless --limits-from etcd)",
      ).env("SHARDLIMIT_CONFIG"),
    )
    .addOption(
      new Option(
        "--limits-from <source>",
        "where limits come from: file (--config, watched) or etcd (cluster mode: `shardlimit limits push`, overrides)",
      )
        .env("SHARDLIMIT_LIMITS_FROM")
        .choices(["file", "etcd"])
        .default("file"),
    )
    .addOption(
      new Option("--grpc-host <host>", "gRPC listen address").env("SHARDLIMIT_GRPC_HOST").default("0.0.0.0"),
    )
    .addOption(
      new Option("--grpc-port <n>", "gRPC port (0: any free port)")
        .env("SHARDLIMIT_GRPC_PORT")
        .default(8081)
        .argParser(portOption("--grpc-port")),
    )
    .addOption(
      new Option("--http-host <host>", "HTTP listen address (/metrics, /healthz, /readyz)")
        .env("SHARDLIMIT_HTTP_HOST")
        .default("0.0.0.0"),
    )
    .addOption(
      new Option("--http-port <n>", "HTTP port (0: any free port)")
        .env("SHARDLIMIT_HTTP_PORT")
        .default(8080)
        .argParser(portOption("--http-port")),
    )
    .addOption(logLevelFlag())
    .addOption(
      new Option("--max-counters <n>", "most counters held; new keys past it get COUNTERS_EXHAUSTED")
        .env("SHARDLIMIT_MAX_COUNTERS")
        .default(5_000_000)
        .argParser(intOption("--max-counters", 1, 1e9)),
    )
    .addOption(
      new Option("--max-batch <n>", "most entries in one report or check")
        .env("SHARDLIMIT_MAX_BATCH")
        .default(10_000)
        .argParser(intOption("--max-batch", 1, 1e6)),
    )
    .addOption(
      new Option("--max-key-length <n>", "longest counter key")
        .env("SHARDLIMIT_MAX_KEY_LENGTH")
        .default(1024)
        .argParser(intOption("--max-key-length", 1, 65_536)),
    )
    .addOption(
      new Option("--shutdown-grace <ms>", "on SIGTERM, how long calls in flight may finish")
        .env("SHARDLIMIT_SHUTDOWN_GRACE_MS")
        .default(5000)
        .argParser(intOption("--shutdown-grace", 0, 600_000)),
    )
    .addOption(etcdFlag("join a cluster through these etcd client URLs (comma-separated)", false))
    .addOption(prefixFlag())
    .addOption(
      new Option("--id <id>", "member id, unique in the cluster (default: hostname-grpcport)")
        .env("SHARDLIMIT_ID")
        .argParser(memberIdOption("--id")),
    )
    .addOption(
      new Option(
        "--advertise-address <host:port>",
        "where other servers and gateways reach this server (default: grpc host, or hostname, and port)",
      ).env("SHARDLIMIT_ADVERTISE_ADDRESS"),
    )
    .addOption(leaseTtlFlag("membership lease TTL in seconds: a crashed server's slices move after it"))
    .addOption(
      new Option("--no-assigner", "do not campaign to run the assigner in this server").env(
        "SHARDLIMIT_NO_ASSIGNER",
      ),
    )
    .addOption(
      new Option(
        "--handoff-timeout <ms>",
        "how long a moved slice waits for its counters before serving (default: past the sender's 10 s of retries)",
      )
        .env("SHARDLIMIT_HANDOFF_TIMEOUT_MS")
        .default(DEFAULT_HANDOFF_TIMEOUT_MS)
        .argParser(intOption("--handoff-timeout", 0, 600_000)),
    )
    .addOption(
      new Option(
        "--replicate-interval <ms>",
        "how often changed counters are copied to this server's buddy, so a crash loses at most this much of sync-only keys' counts (0: never)",
      )
        .env("SHARDLIMIT_REPLICATE_INTERVAL")
        .default(DEFAULT_REPLICATE_INTERVAL_MS)
        .argParser(intOption("--replicate-interval", 0, 60_000)),
    )
    .addOption(
      new Option(
        "--drain-timeout <ms>",
        "on SIGTERM, the deadline for this server's slices to move away (leaving has 2 s more)",
      )
        .env("SHARDLIMIT_DRAIN_TIMEOUT_MS")
        .default(DEFAULT_DRAIN_TIMEOUT_MS)
        .argParser(intOption("--drain-timeout", 0, 600_000)),
    )
    .addOption(
      new Option(
        "--allow-limit-removal",
        "apply config reloads that remove a domain or a rule (refused by default: what they remove becomes unlimited)",
      ).env("SHARDLIMIT_ALLOW_LIMIT_REMOVAL"),
    )
    .addOption(loadIntervalFlag("how often this server publishes its per-slice load (0: never)", 0))
    .addOption(rebalanceIntervalFlag())
    .addOption(etcdAccess.ca)
    .addOption(etcdAccess.cert)
    .addOption(etcdAccess.key)
    .addOption(etcdAccess.authFile)
    .addOption(tls.cert)
    .addOption(tls.key)
    .addOption(tls.ca)
    .addOption(tls.clientAuth)
    .addOption(peerServerNameFlag())
    .addOption(tlsReloadIntervalFlag())
    .addOption(
      new Option(
        "--auth-file <path>",
        "who may call what: identities (tokens, certificate names) as members, gateways per domain, operators (YAML; reloaded on change and SIGHUP). Without it everything is allowed",
      ).env("SHARDLIMIT_AUTH_FILE"),
    )
    .addOption(
      new Option(
        "--token-file <path>",
        "a file holding this server's bearer token, sent on its calls to peers (re-read when it changes)",
      ).env("SHARDLIMIT_TOKEN_FILE"),
    )
    .addOption(
      new Option("--no-reflection", "turn gRPC server reflection off").env("SHARDLIMIT_NO_REFLECTION"),
    )
    .addOption(
      new Option(
        "--transport <t>",
        "how the hot methods (ShouldRateLimit, Check, ReportAndGetPolicy, Peer.Forward) are served: lean (gRPC framing on node:http2 directly) or grpc-js; everything else is grpc-js's on the same port",
      )
        .env("SHARDLIMIT_TRANSPORT")
        .choices(TRANSPORTS)
        .default(DEFAULT_TRANSPORT),
    )
    .addOption(
      new Option("--limits-read <who>", "who may call GetLimits: anyone, or authenticated callers only")
        .env("SHARDLIMIT_LIMITS_READ")
        .choices(["anyone", "authenticated"])
        .default("anyone"),
    )
    .addOption(globalTierFlags.tier())
    .addOption(globalTierFlags.region())
    .addOption(globalTierFlags.fallbackAfter())
    .addOption(globalTierFlags.regions())
    .addOption(globalTierFlags.reportInterval())
    .addOption(globalTierFlags.ca())
    .addOption(globalTierFlags.serverName())
    .addOption(
      new Option(
        "--otel",
        'OpenTelemetry spans for Check, ShouldRateLimit, forwarding and reports (register an SDK with node --import; README "Tracing")',
      ).env("SHARDLIMIT_OTEL"),
    )
    .addOption(
      new Option(
        "--rlqs-config <path>",
        "serve Envoy's Rate Limit Quota Service (RLQS) with this bucket mapping (a YAML file with an `rlqs:` section)",
      ).env("SHARDLIMIT_RLQS_CONFIG"),
    )
    .addOption(
      new Option(
        "--workers <n>",
        "processes serving on this host, each a cluster member with its own slices (gRPC on --grpc-port + i, HTTP on free ports; this process's --http-port: /readyz of all, /metrics of all); `auto`: one per core. Above 1 without --etcd they coordinate through a private etcd (`etcd` on PATH)",
      )
        .env("SHARDLIMIT_WORKERS")
        .default(1)
        .argParser(workersOption),
    )
    .addOption(
      new Option(
        "--heap-growing-percent <n>",
        "how far V8's old generation grows past its live size before the next mark-compact (0: V8's own factor): smaller makes those pauses shorter and more frequent",
      )
        .env("SHARDLIMIT_HEAP_GROWING_PERCENT")
        .default(DEFAULT_HEAP_GROWING_PERCENT)
        .argParser(intOption("--heap-growing-percent", 0, 1000)),
    )
    .action(async (flags: ServeFlags, command: Command) => {
      // Process-wide, before anything fills the heap; `--workers` children get it from their args.
      // The default gives way to a --heap-growing-percent on node's own command line.
      applyHeapGrowing(
        flags.heapGrowingPercent,
        command.getOptionValueSource("heapGrowingPercent") !== "default",
      );
      // Synchronous writes: serve ends with process.exit, which drops what an asynchronous stdout
      // still buffers, i.e. the last lines ("shut down", what a drain left undone). It logs
      // events, never per call, so blocking writes cost nothing.
      const log = pino(
        {
          level: flags.logLevel,
          base: {
            svc: "shardlimit",
            ...(process.env.SHARDLIMIT_WORKER ? { worker: Number(process.env.SHARDLIMIT_WORKER) } : {}),
          },
        },
        pino.destination({ dest: 1, sync: true }),
      );
      if (flags.workers > 1) return superviseWorkers(flags, log);
      let server: Awaited<ReturnType<typeof startServer>> | undefined;
      // Signal handlers go in before the server starts: it reports ready (log, /readyz, health)
      // before startServer returns, and until a handler exists SIGTERM and SIGHUP kill outright.
      let stopping: string | undefined;
      const exit = (code: number) => process.exit(code);
      const drainAndExit = (s: NonNullable<typeof server>) =>
        s.shutdown().then(
          () => exit(0),
          (err) => {
            log.error({ err }, "shutdown failed");
            exit(1);
          },
        );
      // One SIGTERM starts the drain, which has its own deadline (--drain-timeout); a repeat
      // (some supervisors resend) must not cut it short, or counters are lost that the drain was
      // about to hand over. An operator's second Ctrl-C means "now": SIGINT while stopping exits
      // at once, code 130 (128 + SIGINT), saying what it left undone.
      const stop = (signal: string) => {
        if (stopping !== undefined) {
          if (signal === "SIGINT") {
            log.warn(
              { slicesOwned: server?.cluster?.ownership.slicesOwned() },
              "SIGINT while stopping: exiting now without finishing the drain",
            );
            exit(130);
          }
          log.info({ signal, stopping }, `already stopping: ${signal} ignored, the drain goes on`);
          return;
        }
        log.info({ signal }, signal === "SIGINT" ? "stopping (SIGINT again to exit at once)" : "stopping");
        stopping = signal;
        if (server) drainAndExit(server);
      };
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
      // A worker of `serve --workers`: its supervisor gone (the IPC channel closed), it stops too.
      if (process.env.SHARDLIMIT_WORKER !== undefined && process.connected)
        process.on("disconnect", () => stop("SIGTERM"));
      process.on("SIGHUP", () => {
        if (!server) return;
        log.info("SIGHUP: reloading config");
        server.reload();
      });
      // Flag combinations that cannot work end here, naming the flags (exit 2); the files are
      // read and checked when the server starts.
      const tlsOptions = listenerTlsOf(
        { cert: flags.tlsCert, key: flags.tlsKey, ca: flags.tlsCa, clientAuth: flags.tlsClientAuth },
        listenerTlsNames("tls"),
        { dialsPeers: flags.etcd ? "--etcd" : undefined, peerServerName: flags.peerServerName },
      );
      const etcdAccessOptions = etcdAccessOf(flags, flags.etcd);
      if (flags.limitsFrom === "etcd") {
        if (!flags.etcd) throw new OptionsError("--limits-from etcd needs --etcd (cluster mode)");
        if (flags.config !== undefined)
          throw new OptionsError(
            "--config (or SHARDLIMIT_CONFIG) is not read with --limits-from etcd: leave it out",
          );
      } else if (flags.config === undefined) {
        // As commander said while --config was mandatory (exit 1).
        process.stderr.write(
          "error: required option '-c, --config <path>' not specified (or --limits-from etcd with --etcd)\n",
        );
        process.exitCode = 1;
        return;
      } else if (flags.config.trim() === "") {
        process.stderr.write(
          "shardlimit: --config (or SHARDLIMIT_CONFIG) is empty: name a YAML file or a directory of them\n",
        );
        process.exitCode = 2;
        return;
      }
      const global = globalTierSettings(flags, tlsOptions !== undefined);
      try {
        server = await startServer(
          {
            configPath: flags.config ?? "",
            limitsFrom: flags.limitsFrom,
            grpcHost: flags.grpcHost,
            grpcPort: flags.grpcPort,
            httpHost: flags.httpHost,
            httpPort: flags.httpPort,
            maxCounters: flags.maxCounters,
            shutdownGraceMs: flags.shutdownGrace,
            limits: InputLimitsSchema.parse({ maxBatch: flags.maxBatch, maxKeyLength: flags.maxKeyLength }),
            advertiseAddress: flags.advertiseAddress,
            drainTimeoutMs: flags.drainTimeout,
            allowLimitRemoval: flags.allowLimitRemoval ?? false,
            tracing: flags.otel ?? false,
            tls: tlsOptions && { ...tlsOptions, pollMs: flags.tlsReloadInterval },
            authFile: flags.authFile,
            tokenFile: flags.tokenFile,
            reflection: flags.reflection,
            transport: flags.transport,
            limitsRead: flags.limitsRead,
            envoy: envoyOptionsOf(flags),
            ...(global ? { global } : {}),
            rlqsConfigPath: flags.rlqsConfig,
            cluster: flags.etcd
              ? {
                  etcd: flags.etcd,
                  prefix: flags.prefix,
                  id: flags.id ?? `${hostname()}-${flags.grpcPort}`,
                  capacity: 1,
                  leaseTtlSeconds: flags.leaseTtl,
                  assigner: flags.assigner,
                  handoffTimeoutMs: flags.handoffTimeout,
                  replicateIntervalMs: flags.replicateInterval,
                  loadIntervalMs: flags.loadInterval,
                  rebalanceIntervalMs: flags.rebalanceInterval,
                  etcdAccess: etcdAccessOptions,
                }
              : undefined,
          },
          log,
        );
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(`shardlimit: the config is invalid:\n${err.message}\n`);
        } else {
          process.stderr.write(`shardlimit: cannot start: ${(err as Error).message}\n`);
        }
        process.exitCode = 1;
        return;
      }
      // A worker of `serve --workers` tells its supervisor its ports over the IPC channel, whatever
      // --log-level hides (the "shardlimit serving" line is info).
      if (process.env.SHARDLIMIT_WORKER !== undefined && process.send !== undefined)
        process.send({ serving: { grpcPort: server.grpcPort, httpPort: server.httpPort } });
      // A signal that came while starting is acted on now.
      if (stopping !== undefined) drainAndExit(server);
    });
  for (const o of envoyFlags()) cmd.addOption(o);
  return cmd;
}

/** `--workers`: a whole number of processes, or `auto` (one per core this process may use). */
function workersOption(v: string): number {
  if (v.trim() === "auto") return availableParallelism();
  return intOption("--workers", 1, 256)(v);
}

/**
 * `serve --workers N` (N > 1): this process starts the N workers (app/workers.ts) and stays their
 * supervisor: SIGTERM and SIGINT go to every worker, and it exits when they have; SIGHUP reloads all.
 */
async function superviseWorkers(flags: ServeFlags, log: Logger): Promise<void> {
  // The private etcd of a standalone server holds no pushed limits: as without --workers.
  if (flags.limitsFrom === "etcd" && !flags.etcd)
    throw new OptionsError("--limits-from etcd needs --etcd (cluster mode)");
  let running: Awaited<ReturnType<typeof startWorkers>> | undefined;
  let stopping: NodeJS.Signals | undefined;
  const stop = (signal: NodeJS.Signals) => {
    if (!running) {
      stopping = signal;
      return;
    }
    if (stopping === undefined) log.info({ signal }, "stopping every worker");
    stopping = signal;
    void running.shutdown(signal).then((code) => process.exit(code));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => running?.reload());
  try {
    running = await startWorkers(
      {
        workers: flags.workers,
        command: {
          exec: process.execPath,
          args: [
            ...process.execArgv,
            ...workerNodeFlags(flags.workers, availableParallelism()),
            ...process.argv.slice(1),
          ],
        },
        grpcHost: flags.grpcHost,
        grpcPort: flags.grpcPort,
        httpHost: flags.httpHost,
        httpPort: flags.httpPort,
        etcd: flags.etcd,
        id: flags.id,
        advertiseAddress: flags.advertiseAddress,
      },
      log,
    );
  } catch (err) {
    process.stderr.write(`shardlimit: cannot start the workers: ${(err as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  if (stopping !== undefined) stop(stopping);
  void running.failed.then(async (code) => {
    await running?.shutdown("SIGTERM");
    process.exit(code);
  });
}
