import { hostname } from "node:os";
import { Command, Option } from "commander";
import { pino } from "pino";
import { AssignerNode } from "../cluster/assigner-node.js";
import { systemClock } from "../core/clock.js";
import { etcdUrlsOption, intOption, memberIdOption, prefixOption } from "./options.js";

interface AssignerFlags {
  etcd: string[];
  prefix: string;
  id?: string;
  leaseTtl: number;
  loadInterval: number;
  rebalanceInterval: number;
  logLevel: string;
}

export function assignerCommand(): Command {
  return new Command("assigner")
    .description(
      "run only the assigner (elected through etcd; servers embed one unless started with --no-assigner)",
    )
    .addOption(
      new Option("--etcd <urls>", "etcd client URLs (comma-separated)")
        .env("SHARDLIMIT_ETCD")
        .makeOptionMandatory()
        .argParser(etcdUrlsOption("--etcd")),
    )
    .addOption(
      new Option("--prefix <prefix>", "etcd key prefix of the cluster")
        .env("SHARDLIMIT_PREFIX")
        .default("/shardlimit/")
        .argParser(prefixOption("--prefix")),
    )
    .addOption(
      new Option("--id <id>", "candidate id (default: hostname-assigner-pid)")
        .env("SHARDLIMIT_ID")
        .argParser(memberIdOption("--id")),
    )
    .addOption(
      new Option("--lease-ttl <s>", "leadership lease TTL in seconds")
        .env("SHARDLIMIT_LEASE_TTL")
        .default(3)
        .argParser(intOption("--lease-ttl", 1, 60)),
    )
    .addOption(
      new Option("--load-interval <ms>", "how often servers publish load (older records are ignored)")
        .env("SHARDLIMIT_LOAD_INTERVAL_MS")
        .default(2000)
        .argParser(intOption("--load-interval", 1, 600_000)),
    )
    .addOption(
      new Option("--rebalance-interval <ms>", "how often to balance load by moving slices (0: never)")
        .env("SHARDLIMIT_REBALANCE_INTERVAL_MS")
        .default(10_000)
        .argParser(intOption("--rebalance-interval", 0, 3_600_000)),
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .env("SHARDLIMIT_LOG_LEVEL")
        .choices(["trace", "debug", "info", "warn", "error", "fatal", "silent"])
        .default("info"),
    )
    .action(async (flags: AssignerFlags) => {
      const log = pino({ level: flags.logLevel, base: { svc: "shardlimit-assigner" } });
      const node = new AssignerNode({
        etcd: flags.etcd,
        prefix: flags.prefix,
        id: flags.id ?? `${hostname()}-assigner-${process.pid}`,
        leaseTtlSeconds: flags.leaseTtl,
        loadIntervalMs: flags.loadInterval,
        rebalanceIntervalMs: flags.rebalanceInterval,
        clock: systemClock,
        log,
      });
      const stop = (signal: string) => {
        log.info({ signal }, "stopping");
        node.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
      await node.start();
      log.info({ prefix: flags.prefix }, "assigner candidate running");
    });
}
