import { Option } from "commander";
import type { ServeEnvoyOptions } from "../app/serve.js";
import { OptionsError } from "../core/errors.js";
import { DEFAULT_ENVOY_OPTIONS, DEFAULT_HEADER_NAMES, type EnvoyOptions } from "../server/envoy-options.js";
import { DEFAULT_DESCRIPTOR_METRIC_KEYS } from "../server/envoy-stats.js";
import { intOption } from "./options.js";

/**
 * `shardlimit serve`'s flags for envoyproxy/ratelimit's server options, named after its
 * environment variables (in brackets in each flag's help).
 */

export interface EnvoyFlagValues {
  shadowMode?: boolean;
  quotaMode?: boolean;
  responseHeaders?: boolean;
  headerRatelimitLimit: string;
  headerRatelimitRemaining: string;
  headerRatelimitReset: string;
  responseDynamicMetadata?: boolean;
  stopChargingWhenOverLimit?: boolean;
  mergeDomains?: boolean;
  nearLimitRatio: number;
  descriptorMetricKeys: number;
}

/** An HTTP header name: RFC 9110's token characters, as Envoy accepts. */
function headerName(flag: string): (v: string) => string {
  return (v: string) => {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(v)) {
      throw new OptionsError(
        `${flag} must be an HTTP header name such as X-RateLimit-Limit, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
}

function ratio(flag: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1) {
      throw new OptionsError(`${flag} must be a number from 0 to 1, such as 0.8, got ${JSON.stringify(v)}`);
    }
    return n;
  };
}

/** The flags that shape the answer only: `serve`'s and `sidecar`'s. */
export function envoyResponseFlags(): Option[] {
  return [
    new Option(
      "--shadow-mode",
      "answer OK to every ShouldRateLimit, still counting and reporting what would be rejected [SHADOW_MODE]",
    ).env("SHARDLIMIT_SHADOW_MODE"),
    new Option(
      "--quota-mode",
      "put every limit in quota mode: a request is over only when all its quota limits are [QUOTA_MODE]",
    ).env("SHARDLIMIT_QUOTA_MODE"),
    new Option(
      "--response-headers",
      "add RateLimit-Limit, -Remaining and -Reset headers through response_headers_to_add [LIMIT_RESPONSE_HEADERS_ENABLED]",
    ).env("SHARDLIMIT_RESPONSE_HEADERS"),
    new Option("--header-ratelimit-limit <name>", "name of the limit header [LIMIT_LIMIT_HEADER]")
      .env("SHARDLIMIT_HEADER_RATELIMIT_LIMIT")
      .default(DEFAULT_HEADER_NAMES.limit)
      .argParser(headerName("--header-ratelimit-limit")),
    new Option("--header-ratelimit-remaining <name>", "name of the remaining header [LIMIT_REMAINING_HEADER]")
      .env("SHARDLIMIT_HEADER_RATELIMIT_REMAINING")
      .default(DEFAULT_HEADER_NAMES.remaining)
      .argParser(headerName("--header-ratelimit-remaining")),
    new Option("--header-ratelimit-reset <name>", "name of the reset header [LIMIT_RESET_HEADER]")
      .env("SHARDLIMIT_HEADER_RATELIMIT_RESET")
      .default(DEFAULT_HEADER_NAMES.reset)
      .argParser(headerName("--header-ratelimit-reset")),
    new Option(
      "--response-dynamic-metadata",
      "return the request's descriptors and the passing limits' metadata as dynamic_metadata [RESPONSE_DYNAMIC_METADATA]",
    ).env("SHARDLIMIT_RESPONSE_DYNAMIC_METADATA"),
  ];
}

export function envoyFlags(): Option[] {
  return [
    ...envoyResponseFlags(),
    new Option(
      "--stop-charging-when-over-limit",
      "when one descriptor of a request goes over, do not charge the others [STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT]",
    ).env("SHARDLIMIT_STOP_CHARGING_WHEN_OVER_LIMIT"),
    new Option(
      "--merge-domains",
      "merge a domain defined in several config files instead of refusing it [MERGE_DOMAIN_CONFIG]",
    ).env("SHARDLIMIT_MERGE_DOMAINS"),
    new Option(
      "--near-limit-ratio <ratio>",
      "hits above this fraction of a limit count as near_limit [NEAR_LIMIT_RATIO]",
    )
      .env("SHARDLIMIT_NEAR_LIMIT_RATIO")
      .default(DEFAULT_ENVOY_OPTIONS.nearLimitRatio)
      .argParser(ratio("--near-limit-ratio")),
    new Option(
      "--descriptor-metric-keys <n>",
      "distinct limit names shardlimit_envoy_descriptor_hits_total tracks; the rest count as (other); 0: none",
    )
      .env("SHARDLIMIT_DESCRIPTOR_METRIC_KEYS")
      .default(DEFAULT_DESCRIPTOR_METRIC_KEYS)
      .argParser(intOption("--descriptor-metric-keys", 0, 100_000)),
  ];
}

export type EnvoyResponseFlagValues = Pick<
  EnvoyFlagValues,
  | "shadowMode"
  | "quotaMode"
  | "responseHeaders"
  | "headerRatelimitLimit"
  | "headerRatelimitRemaining"
  | "headerRatelimitReset"
  | "responseDynamicMetadata"
>;

/** The sidecar's options: those that shape the answer; it charges nothing itself. */
export function envoyResponseOptionsOf(f: EnvoyResponseFlagValues): EnvoyOptions {
  const {
    mergeDomains: _m,
    descriptorMetricKeys: _k,
    ...options
  } = envoyOptionsOf({
    ...f,
    stopChargingWhenOverLimit: false,
    nearLimitRatio: DEFAULT_ENVOY_OPTIONS.nearLimitRatio,
    descriptorMetricKeys: 0,
  });
  return options;
}

export function envoyOptionsOf(f: EnvoyFlagValues): ServeEnvoyOptions {
  return {
    shadowMode: f.shadowMode ?? false,
    quotaMode: f.quotaMode ?? false,
    ...(f.responseHeaders
      ? {
          responseHeaders: {
            limit: f.headerRatelimitLimit,
            remaining: f.headerRatelimitRemaining,
            reset: f.headerRatelimitReset,
          },
        }
      : {}),
    dynamicMetadata: f.responseDynamicMetadata ?? false,
    stopChargingWhenOverLimit: f.stopChargingWhenOverLimit ?? false,
    mergeDomains: f.mergeDomains ?? false,
    nearLimitRatio: f.nearLimitRatio,
    descriptorMetricKeys: f.descriptorMetricKeys,
  };
}
