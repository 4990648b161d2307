import client from "prom-client";
import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import type { EnvoyDescriptor, EnvoyResponse } from "../../src/protocol/messages.js";
import { EnvoyRateLimit } from "../../src/server/envoy.js";
import {
  DEFAULT_ENVOY_OPTIONS,
  DEFAULT_HEADER_NAMES,
  type EnvoyOptions,
} from "../../src/server/envoy-options.js";
import { DescriptorMetrics } from "../../src/server/envoy-stats.js";
import { noopMetrics } from "../../src/server/metrics.js";
import { StandaloneOwnership } from "../../src/server/ownership.js";
import { desc, T0 } from "./harness.js";

/**
 * envoyproxy/ratelimit's server options on ShouldRateLimit, case by case after its service tests
 * (test/service/ratelimit_test.go): global shadow mode, global and per-limit quota mode, the
 * response headers, dynamic metadata with the passing limits' metadata, not charging the other
 * descriptors of a rejected request, and the per-limit statistics with near_limit.
 */

const OK = 1;
const OVER = 2;

const CONFIG = `
domain: d
descriptors:
  - key: regular
    rate_limit: { unit: minute, requests_per_unit: 2 }
  - key: regular2
    rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: quota
    quota_mode: true
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: quota2
    quota_mode: true
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: hour
    rate_limit: { unit: hour, requests_per_unit: 10 }
  - key: free
    rate_limit: { unlimited: true }
  - key: meta1
    metadata: { service: { name: one, tier: gold }, owner: a }
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: meta2
    metadata: { service: { name: two, zone: eu }, extra: [1, true] }
    rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: near
    detailed_metric: true
    rate_limit: { unit: minute, requests_per_unit: 10 }
`;

function setup(options: Partial<EnvoyOptions> = {}) {
  const clock = new ManualClock(T0 + 15_500);
  const config = compileSources([{ file: "envoy.yaml", text: CONFIG }]);
  const engine = new Engine();
  const registry = new client.Registry();
  const all = { ...DEFAULT_ENVOY_OPTIONS, ...options };
  const descriptorMetrics = new DescriptorMetrics(registry, 3, all.nearLimitRatio);
  const envoy = new EnvoyRateLimit(
    {
      engine,
      clock,
      ownership: new StandaloneOwnership("127.0.0.1:1", clock),
      limits: DEFAULT_INPUT_LIMITS,
      metrics: noopMetrics,
      options: all,
      descriptorMetrics,
      metricKey: (d, e) => config.metricKey?.(d, e),
    },
    (d, e) => config.resolve(d, e),
    (d) => config.domains.includes(d),
  );
  const call = (...descriptors: EnvoyDescriptor[]): EnvoyResponse =>
    envoy.shouldRateLimit({ domain: "d", descriptors, hitsAddend: 0 });
  const codes = (r: EnvoyResponse) => [r.overallCode, ...r.statuses.map((s) => s.code)];
  const stats = async () => {
    const m = (await registry.getMetricsAsJSON()).find(
      (x) => x.name === "shardlimit_envoy_descriptor_hits_total",
    );
    const out: Record<string, number> = {};
    for (const v of m?.values ?? []) out[`${v.labels.key} ${v.labels.stat}`] = v.value;
    return out;
  };
  return { call, codes, stats, engine, config, clock, envoy };
}

describe("global shadow mode (SHADOW_MODE)", () => {
  it("answers OK overall, leaving each status as it is", () => {
    const { call, codes } = setup({ shadowMode: true });
    call(desc("regular=a"));
    call(desc("regular=a"));
    expect(codes(call(desc("regular=a"), desc("regular2=b")))).toEqual([OK, OVER, OK]);
  });

  it("is off by default", () => {
    const { call, codes } = setup();
    call(desc("regular=a"));
    call(desc("regular=a"));
    expect(codes(call(desc("regular=a")))).toEqual([OVER, OVER]);
  });
});

describe("quota mode", () => {
  it("per limit: a regular limit over rejects the request whatever its quota limits say", () => {
    const { call, codes } = setup();
    call(desc("regular=b"));
    call(desc("regular=b"));
    expect(codes(call(desc("quota=a"), desc("regular=b")))).toEqual([OVER, OK, OVER]);
    // The only quota limit over is all of them: over too, as in envoyproxy/ratelimit.
    expect(codes(call(desc("quota=a"), desc("regular2=c")))).toEqual([OVER, OVER, OK]);
  });

  it("per limit: over when every quota limit of the request is over", () => {
    const { call, codes } = setup();
    call(desc("quota=a"), desc("quota2=b"));
    expect(codes(call(desc("quota=a"), desc("quota2=c")))).toEqual([OK, OVER, OK]);
    expect(codes(call(desc("quota=a"), desc("quota2=b")))).toEqual([OVER, OVER, OVER]);
    // A quota limit over next to an unlimited descriptor: the unlimited one is not a quota limit.
    expect(codes(call(desc("quota=a"), desc("free=x")))).toEqual([OVER, OVER, OK]);
  });

  it("global (QUOTA_MODE): every limit is a quota limit", () => {
    const { call, codes } = setup({ quotaMode: true });
    call(desc("regular=a"));
    call(desc("regular=a"));
    expect(codes(call(desc("regular=a"), desc("regular2=b")))).toEqual([OK, OVER, OK]);
    expect(codes(call(desc("regular=a")))).toEqual([OVER, OVER]);
  });

  it("with global shadow mode, even all quota limits over answer OK", () => {
    const { call, codes } = setup({ shadowMode: true });
    call(desc("quota=a"), desc("quota2=b"));
    expect(codes(call(desc("quota=a"), desc("quota2=b")))).toEqual([OK, OVER, OVER]);
  });
});

describe("response headers (LIMIT_RESPONSE_HEADERS_ENABLED)", () => {
  const names = {
    limit: "X-RateLimit-Limit",
    remaining: "X-RateLimit-Remaining",
    reset: "X-RateLimit-Reset",
  };

  it("describe the descriptor closest to its limit, reset at the end of its unit", () => {
    const { call } = setup({ responseHeaders: names });
    // 15.5 s into the minute and the hour: the minute resets in 45 s, the hour in 3585 s.
    const r = call(desc("hour=a"), desc("regular2=b"));
    expect(r.responseHeadersToAdd).toEqual([
      { key: "X-RateLimit-Limit", value: "5" },
      { key: "X-RateLimit-Remaining", value: "4" },
      { key: "X-RateLimit-Reset", value: "45" },
    ]);
    const h = call(desc("hour=a")).responseHeadersToAdd;
    expect(h?.map((x) => x.value)).toEqual(["10", "8", "3585"]);
  });

  it("describe the limit that rejected, with 0 remaining; none for unlimited or unmatched", () => {
    const { call } = setup({ responseHeaders: { ...DEFAULT_HEADER_NAMES } });
    call(desc("regular=a"));
    call(desc("regular=a"));
    const r = call(desc("regular2=b"), desc("regular=a"));
    expect(r.responseHeadersToAdd).toEqual([
      { key: "RateLimit-Limit", value: "2" },
      { key: "RateLimit-Remaining", value: "0" },
      { key: "RateLimit-Reset", value: "45" },
    ]);
    expect(call(desc("free=x"), desc("nothing=y")).responseHeadersToAdd).toBeUndefined();
  });

  it("are left to the forwarding server in a part forwarded to an owner", () => {
    const { envoy } = setup({ responseHeaders: names, dynamicMetadata: true });
    const r = envoy.shouldRateLimit({ domain: "d", descriptors: [desc("regular=a")], hitsAddend: 0 }, true);
    expect(r.statuses[0]?.limitRemaining).toBe(1);
    expect(r.responseHeadersToAdd).toBeUndefined();
    expect(r.dynamicMetadata).toBeUndefined();
  });

  it("are absent unless enabled", () => {
    const { call } = setup();
    expect(call(desc("regular=a")).responseHeadersToAdd).toBeUndefined();
  });
});

describe("dynamic metadata (RESPONSE_DYNAMIC_METADATA)", () => {
  it("has the domain, the descriptors, and the passing limits' metadata merged, first value kept", () => {
    const { call } = setup({ dynamicMetadata: true });
    const r = call(desc("meta1=a"), desc("meta2=b", "x=y"), desc("meta2=c"));
    expect(r.dynamicMetadata?.fields).toEqual({
      domain: { stringValue: "d" },
      descriptors: {
        listValue: {
          values: [
            { structValue: { fields: { entries: { listValue: { values: [{ stringValue: "meta1=a" }] } } } } },
            {
              structValue: {
                fields: {
                  entries: { listValue: { values: [{ stringValue: "meta2=b" }, { stringValue: "x=y" }] } },
                },
              },
            },
            { structValue: { fields: { entries: { listValue: { values: [{ stringValue: "meta2=c" }] } } } } },
          ],
        },
      },
      metadata: {
        structValue: {
          fields: {
            service: {
              structValue: {
                fields: {
                  name: { stringValue: "one" },
                  tier: { stringValue: "gold" },
                  zone: { stringValue: "eu" },
                },
              },
            },
            owner: { stringValue: "a" },
            extra: { listValue: { values: [{ numberValue: 1 }, { boolValue: true }] } },
          },
        },
      },
    });
  });

  it("leaves out the metadata of a limit that is over", () => {
    const { call } = setup({ dynamicMetadata: true });
    call(desc("meta1=a"));
    const r = call(desc("meta1=a"), desc("meta2=c"));
    expect(r.overallCode).toBe(OVER);
    const meta = r.dynamicMetadata?.fields.metadata as { structValue: { fields: Record<string, unknown> } };
    expect(Object.keys(meta.structValue.fields).sort()).toEqual(["extra", "service"]);
  });
});

describe("not charging the others when one is over (STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT)", () => {
  it("charges only the descriptor that goes over", () => {
    const { call } = setup({ stopChargingWhenOverLimit: true });
    call(desc("regular=a"));
    call(desc("regular=a"));
    const r = call(desc("regular=a"), desc("regular2=b"));
    expect(r.statuses.map((s) => [s.code, s.limitRemaining])).toEqual([
      [OVER, 0],
      [OK, 5],
    ]);
    // regular2=b was not charged: a request of its own finds all 5 left.
    expect(call(desc("regular2=b")).statuses[0]?.limitRemaining).toBe(4);
  });

  it("charges every descriptor by default", () => {
    const { call } = setup();
    call(desc("regular=a"));
    call(desc("regular=a"));
    call(desc("regular=a"), desc("regular2=b"));
    expect(call(desc("regular2=b")).statuses[0]?.limitRemaining).toBe(3);
  });
});

describe("per-limit statistics", () => {
  it("count hits, within, near (above the ratio) and over, by the limit's metric name", async () => {
    const { call, stats } = setup({ nearLimitRatio: 0.8 });
    for (let i = 0; i < 12; i++) call(desc("near=v"));
    call(desc("regular=a"));
    expect(await stats()).toMatchObject({
      "d.near_v total_hits": 12,
      "d.near_v within_limit": 10,
      // floor(10 * 0.8) = 8: the 9th and 10th hits are near the limit.
      "d.near_v near_limit": 2,
      "d.near_v over_limit": 2,
      "d.regular total_hits": 1,
    });
  });

  it("bound the number of names: past the bound they count as (other)", async () => {
    const { call, stats } = setup();
    for (const v of ["a", "b", "c", "e"]) call(desc(`near=${v}`));
    const s = await stats();
    expect(Object.keys(s).filter((k) => k.startsWith("d.") && k.endsWith("total_hits"))).toHaveLength(3);
    expect(s["(other) total_hits"]).toBe(1);
  });
});
