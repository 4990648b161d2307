import { Command } from "commander";
import { describe, expect, it } from "vitest";
import {
  type EnvoyFlagValues,
  envoyFlags,
  envoyOptionsOf,
  envoyResponseOptionsOf,
} from "../../src/cli/envoy-options.js";

/** `serve`'s envoyproxy/ratelimit flags: parsed from flags and SHARDLIMIT_* variables, bad values refused by name. */

function parse(argv: string[], env: Record<string, string> = {}): EnvoyFlagValues {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const cmd = new Command("serve").exitOverride().configureOutput({ writeErr: () => {} });
    for (const o of envoyFlags()) cmd.addOption(o);
    cmd.parse(argv, { from: "user" });
    return cmd.opts<EnvoyFlagValues>();
  } finally {
    for (const k of Object.keys(env)) if (!(k in saved)) delete process.env[k];
  }
}

describe("serve's envoyproxy/ratelimit flags", () => {
  it("default to envoyproxy/ratelimit's defaults: all off, RateLimit-* header names, ratio 0.8", () => {
    const o = envoyOptionsOf(parse([]));
    expect(o).toEqual({
      shadowMode: false,
      quotaMode: false,
      dynamicMetadata: false,
      stopChargingWhenOverLimit: false,
      mergeDomains: false,
      nearLimitRatio: 0.8,
      descriptorMetricKeys: 1000,
    });
  });

  it("read every option from flags and from SHARDLIMIT_* variables", () => {
    const o = envoyOptionsOf(
      parse(
        ["--response-headers", "--header-ratelimit-limit", "X-RateLimit-Limit", "--near-limit-ratio", "0.5"],
        {
          SHARDLIMIT_SHADOW_MODE: "true",
          SHARDLIMIT_STOP_CHARGING_WHEN_OVER_LIMIT: "1",
          SHARDLIMIT_MERGE_DOMAINS: "1",
        },
      ),
    );
    expect(o).toMatchObject({
      shadowMode: true,
      stopChargingWhenOverLimit: true,
      mergeDomains: true,
      nearLimitRatio: 0.5,
      responseHeaders: {
        limit: "X-RateLimit-Limit",
        remaining: "RateLimit-Remaining",
        reset: "RateLimit-Reset",
      },
    });
  });

  it("for the sidecar, keep only the options that shape the answer", () => {
    const o = envoyResponseOptionsOf(parse(["--quota-mode", "--stop-charging-when-over-limit"]));
    expect(o).toEqual({
      shadowMode: false,
      quotaMode: true,
      dynamicMetadata: false,
      stopChargingWhenOverLimit: false,
      nearLimitRatio: 0.8,
    });
  });

  it("refuse a header name that is not one, and a ratio outside 0..1, naming the flag", () => {
    expect(() => parse(["--header-ratelimit-reset", "X Reset"])).toThrow(
      /--header-ratelimit-reset must be an HTTP header name/,
    );
    expect(() => parse(["--near-limit-ratio", "1.5"])).toThrow(
      /--near-limit-ratio must be a number from 0 to 1/,
    );
    expect(() => parse(["--descriptor-metric-keys", "-1"])).toThrow(
      /--descriptor-metric-keys must be a whole number/,
    );
  });
});
