import { Option } from "commander";
import { DEFAULT_FALLBACK_AFTER_MS, DEFAULT_GLOBAL_REPORT_INTERVAL_MS } from "../cluster/global-tier.js";
import { OptionsError } from "../core/errors.js";
import { hostPortListOption, intOption, memberIdOption, refuseWithout } from "./options.js";

/** `serve`'s flags for global limits across regions (issue 14): where the global tier is, and this region's name. */
export const globalTierFlags = {
  tier: (): Option =>
    new Option(
      "--global-tier <host:port,...>",
      "servers of the global tier: this server's `global: true` limits are divided at this region's share, which it learns there as a gateway",
    )
      .env("SHARDLIMIT_GLOBAL_TIER")
      .argParser(hostPortListOption("--global-tier")),
  region: (): Option =>
    new Option("--region <name>", "this region's name at the global tier (needed with --global-tier)")
      .env("SHARDLIMIT_REGION")
      .argParser(memberIdOption("--region")),
  fallbackAfter: (): Option =>
    new Option(
      "--global-fallback-after <ms>",
      "cut off from the global tier this long, a region keeps to limit / regions instead of its last share",
    )
      .env("SHARDLIMIT_GLOBAL_FALLBACK_AFTER_MS")
      .default(DEFAULT_FALLBACK_AFTER_MS)
      .argParser(intOption("--global-fallback-after", 0, 86_400_000)),
  regions: (): Option =>
    new Option(
      "--global-regions <n>",
      "regions sharing a global limit, for that fallback before the global tier has said (it says with every answer)",
    )
      .env("SHARDLIMIT_GLOBAL_REGIONS")
      .default(1)
      .argParser(intOption("--global-regions", 1, 10_000)),
  reportInterval: (): Option =>
    new Option("--global-report-interval <ms>", "how often a region's counts go to the global tier")
      .env("SHARDLIMIT_GLOBAL_REPORT_INTERVAL_MS")
      .default(DEFAULT_GLOBAL_REPORT_INTERVAL_MS)
      .argParser(intOption("--global-report-interval", 10, 10_000)),
  ca: (): Option =>
    new Option(
      "--global-tier-ca <path>",
      "CA bundle (PEM) the global tier's certificates are verified against, when it is another PKI than --tls-ca (TLS to the global tier even without --tls-cert; this server's --tls-cert/--tls-key, if any, is its client certificate there)",
    ).env("SHARDLIMIT_GLOBAL_TIER_CA"),
  serverName: (): Option =>
    new Option(
      "--global-tier-server-name <name>",
      "the name the global tier's certificates must carry (default: the host of each --global-tier address)",
    ).env("SHARDLIMIT_GLOBAL_TIER_SERVER_NAME"),
};

export interface GlobalTierFlags {
  globalTier?: string[];
  region?: string;
  globalFallbackAfter: number;
  globalRegions: number;
  globalReportInterval: number;
  globalTierCa?: string;
  globalTierServerName?: string;
}

/**
 * The global tier's settings from the flags; undefined without --global-tier. Throws OptionsError
 * naming the flag. `serverTls`: this server has --tls-cert (the link uses its TLS by default).
 */
export function globalTierSettings(flags: GlobalTierFlags, serverTls = false) {
  if (flags.globalTier === undefined) {
    if (flags.region !== undefined) {
      throw new OptionsError("--region has no effect without --global-tier (where the global tier is)");
    }
    refuseWithout(
      { "--global-tier-ca": flags.globalTierCa, "--global-tier-server-name": flags.globalTierServerName },
      "--global-tier (where the global tier is)",
    );
    return undefined;
  }
  if (flags.region === undefined) {
    throw new OptionsError("--global-tier needs --region: this region's name at the global tier");
  }
  if (flags.globalTierServerName !== undefined && flags.globalTierCa === undefined && !serverTls) {
    throw new OptionsError(
      "--global-tier-server-name needs TLS towards the global tier: --global-tier-ca, or this server's --tls-cert and --tls-ca",
    );
  }
  return {
    servers: flags.globalTier,
    region: flags.region,
    fallbackAfterMs: flags.globalFallbackAfter,
    regions: flags.globalRegions,
    reportIntervalMs: flags.globalReportInterval,
    ...(flags.globalTierCa !== undefined ? { ca: flags.globalTierCa } : {}),
    ...(flags.globalTierServerName !== undefined ? { serverName: flags.globalTierServerName } : {}),
  };
}
