import { Option } from "commander";
import { OptionsError } from "../core/errors.js";
import { type EtcdAccess, readEtcdAccess } from "../security/etcd-access.js";
import { etcdUrlsOption, intOption, prefixOption, refuseWithout } from "./options.js";

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

/**
 * How a command reaches etcd, next to `--etcd`: TLS (`--etcd-ca`, and `--etcd-cert`/`--etcd-key`
 * for etcd's --client-cert-auth) and user/password auth from a file (never a flag's value: it
 * would show in `ps`). Pass the parsed values to `etcdAccessOf`.
 */
export function etcdAccessFlags(): { ca: Option; cert: Option; key: Option; authFile: Option } {
  return {
    ca: new Option(
      "--etcd-ca <path>",
      "CA bundle (PEM) etcd's certificate is verified against (https:// URLs)",
    ).env("SHARDLIMIT_ETCD_CA"),
    cert: new Option("--etcd-cert <path>", "client certificate (PEM) presented to etcd").env(
      "SHARDLIMIT_ETCD_CERT",
    ),
    key: new Option("--etcd-key <path>", "the key of --etcd-cert (PEM)").env("SHARDLIMIT_ETCD_KEY"),
    authFile: new Option("--etcd-auth-file <path>", "a file holding etcd's username:password").env(
      "SHARDLIMIT_ETCD_AUTH_FILE",
    ),
  };
}

export interface EtcdAccessFlagValues {
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdAuthFile?: string;
}

/**
 * The files of `etcdAccessFlags`, read and checked (an OptionsError naming the flag or file);
 * undefined without `urls` (a command that reaches etcd only with --etcd), where they are refused.
 */
export function etcdAccessOf(v: EtcdAccessFlagValues, urls: readonly string[]): EtcdAccess;
export function etcdAccessOf(
  v: EtcdAccessFlagValues,
  urls: readonly string[] | undefined,
): EtcdAccess | undefined;
export function etcdAccessOf(
  v: EtcdAccessFlagValues,
  urls: readonly string[] | undefined,
): EtcdAccess | undefined {
  if (urls === undefined) {
    refuseWithout(
      {
        "--etcd-ca": v.etcdCa,
        "--etcd-cert": v.etcdCert,
        "--etcd-key": v.etcdKey,
        "--etcd-auth-file": v.etcdAuthFile,
      },
      "--etcd",
    );
    return undefined;
  }
  if ((v.etcdCert === undefined) !== (v.etcdKey === undefined)) {
    throw new OptionsError(
      v.etcdCert === undefined ? "--etcd-key needs --etcd-cert" : "--etcd-cert needs --etcd-key",
    );
  }
  return readEtcdAccess({ ca: v.etcdCa, cert: v.etcdCert, key: v.etcdKey, authFile: v.etcdAuthFile }, urls);
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
