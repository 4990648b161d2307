import { hostname } from "node:os";
import { Command, Option } from "commander";
import { pino } from "pino";
import { AssignerNode } from "../app/assigner.js";
import { systemClock } from "../core/clock.js";
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
import { memberIdOption } from "./options.js";

interface AssignerFlags extends EtcdAccessFlagValues {
  etcd: string[];
  prefix: string;
  id?: string;
  leaseTtl: number;
  loadInterval: number;
  rebalanceInterval: number;
  logLevel: string;
}

export function assignerCommand(): Command {
  const etcdAccess = etcdAccessFlags();
  return new Command("assigner")
    .description(
      "run only the assigner (elected through etcd; servers embed one unless started with --no-assigner)",
    )
    .addOption(etcdFlag("etcd client URLs (comma-separated)", true))
    .addOption(prefixFlag())
    .addOption(
      new Option("--id <id>", "candidate id (default: hostname-assigner-pid)")
        .env("SHARDLIMIT_ID")
        .argParser(memberIdOption("--id")),
    )
    .addOption(leaseTtlFlag("leadership lease TTL in seconds"))
    .addOption(loadIntervalFlag("how often servers publish load (older records are ignored)", 1))
    .addOption(rebalanceIntervalFlag())
    .addOption(logLevelFlag())
    .addOption(etcdAccess.ca)
    .addOption(etcdAccess.cert)
    .addOption(etcdAccess.key)
    .addOption(etcdAccess.authFile)
    .action(async (flags: AssignerFlags) => {
      const etcdAccessOptions = etcdAccessOf(flags, flags.etcd);
      const log = pino({ level: flags.logLevel, base: { svc: "shardlimit-assigner" } });
      const node = new AssignerNode({
        etcd: flags.etcd,
        etcdAccess: etcdAccessOptions,
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
