import { Option } from "commander";
import { etcdUrlsOption, intOption, prefixOption } from "./options.js";

/** Flags that several commands share, each with its SHARDLIMIT_* environment variable. */

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

export function logLevelFlag(): Option {
  return new Option("--log-level <level>", "log level")
    .env("SHARDLIMIT_LOG_LEVEL")
    .choices(LOG_LEVELS)
    .default("info");
}

export function etcdFlag(description: string, mandatory: boolean): Option {
  const o = new Option("--etcd <urls>", description)
    .env("SHARDLIMIT_ETCD")
    .argParser(etcdUrlsOption("--etcd"));
  return mandatory ? o.makeOptionMandatory() : o;
}

export function prefixFlag(): Option {
  return new Option("--prefix <prefix>", "etcd key prefix of the cluster")
    .env("SHARDLIMIT_PREFIX")
    .default("/shardlimit/")
    .argParser(prefixOption("--prefix"));
}

export function leaseTtlFlag(description: string): Option {
  return new Option("--lease-ttl <s>", description)
    .env("SHARDLIMIT_LEASE_TTL")
    .default(3)
    .argParser(intOption("--lease-ttl", 1, 60));
}

export function loadIntervalFlag(description: string, min: number): Option {
  return new Option("--load-interval <ms>", description)
    .env("SHARDLIMIT_LOAD_INTERVAL_MS")
    .default(2000)
    .argParser(intOption("--load-interval", min, 600_000));
}

export function rebalanceIntervalFlag(): Option {
  return new Option(
    "--rebalance-interval <ms>",
    "how often the assigner balances load by moving slices (0: never)",
  )
    .env("SHARDLIMIT_REBALANCE_INTERVAL_MS")
    .default(10_000)
    .argParser(intOption("--rebalance-interval", 0, 3_600_000));
}
