import client from "prom-client";
import { describe, expect, it } from "vitest";
import type { ClientTransport } from "../../src/client/transport.js";
import { GLOBAL_STATUS_KEYS, GlobalTier, globalTierMetrics } from "../../src/cluster/global-tier.js";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { seededRandom } from "../../src/core/random.js";
import { CuttableLink } from "../../src/sim/global.js";
import { SimNetwork } from "../../src/sim/network.js";
import { SimCluster } from "../../src/sim/sim-cluster.js";

/**
 * A region's link to the global tier: two regions (GlobalTier each) and a simulated global server
 * (the real Limiter) 50 ms away, on a ManualClock. Region A asks 800/s and B 100/s of 1000/s.
 */

const YAML = `domain: api
descriptors:
  - key: orders
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000, global: true }
`;
const KEY = "api/orders=o";
/** The region a log line names, appended to its message (lines of the link name it). */
const regionOf = (o: object) => {
  const f = o as { region?: unknown; link?: unknown };
  return f.link !== undefined ? ` [${String(f.region)}]` : "";
};
const T0 = 600_000;

function setup(
  fallbackAfterMs = 5000,
  globalYaml = YAML,
  wrap: (t: ClientTransport) => ClientTransport = (t) => t,
) {
  const clock = new ManualClock(T0);
  const random = seededRandom(7);
  const config = compileSources([{ file: "g.yaml", text: YAML }]);
  const rule = config.rules[0]!;
  const global = new SimCluster(clock, compileSources([{ file: "g.yaml", text: globalYaml }]), 1);
  const warnings: string[] = [];
  const infos: string[] = [];
  const servers = global.servers.map((s) => s.member.address);
  const region = (name: string) => {
    const link = new CuttableLink(
      clock,
      new SimNetwork(clock, global, { delayMs: 50, jitterMs: 0, loss: 0, random }),
    );
    const tier = new GlobalTier({
      region: name,
      servers,
      transport: wrap(link),
      clock,
      regions: 2,
      fallbackAfterMs,
      instanceId: "t",
      random,
      logger: {
        warn: (o, m) => warnings.push(m + regionOf(o)),
        info: (o, m) => infos.push(m + regionOf(o)),
      },
    });
    tier.start();
    return { link, tier };
  };
  const a = region("region-a");
  const b = region("region-b");
  /** `ms` of traffic: every 100 ms each region's gateways report 80 and 10 units. */
  const run = (ms: number) => {
    for (let t = 0; t < ms; t += 100) {
      clock.advance(100);
      a.tier.reported(KEY, rule, 80, 0);
      b.tier.reported(KEY, rule, 10, 0);
      a.tier.ruleFor(KEY, rule, clock.now());
      b.tier.ruleFor(KEY, rule, clock.now());
    }
  };
  const status = (r: typeof a) => r.tier.keyStatus().find((s) => s.key === KEY)!;
  return { clock, rule, a, b, run, status, warnings, infos };
}

describe("GlobalTier: a region's share of a global limit", () => {
  it("before the global tier answers, keeps to limit / regions", () => {
    const { a, rule, clock } = setup();
    a.tier.reported(KEY, rule, 0, 0);
    expect(a.tier.ruleFor(KEY, rule, clock.now()).limit).toBeCloseTo(500, 6);
    expect(a.tier.keyStatus()[0]!.mode).toBe("fallback");
  });

  it("connected, divides the limit max-min by the regions' demand: the light region gets all it asks", () => {
    const { run, a, b, status, rule, clock } = setup();
    // Shares are smoothed over a second: the first answers (one region known, the whole limit
    // its share) take a few seconds to fade.
    run(6000);
    expect(status(a).mode).toBe("connected");
    expect(status(b).mode).toBe("connected");
    const sa = status(a).sharePerS;
    const sb = status(b).sharePerS;
    expect(sa + sb).toBeGreaterThan(990);
    expect(sa + sb).toBeLessThan(1010);
    expect(sb).toBeGreaterThanOrEqual(100);
    // The rule the region divides: the share as its limit, the burst scaled alike, not global.
    const r = a.tier.ruleFor(KEY, rule, clock.now());
    expect(r.limit).toBeCloseTo(sa, 6);
    expect(r.burst).toBeCloseTo(sa, 6);
    expect(r.global).toBe(false);
  });

  it("cut off, keeps to its last share; after fallbackAfterMs to limit / regions; back once the link is", () => {
    const { run, a, status } = setup(5000);
    run(3000);
    const before = status(a).lastSharePerS;
    a.link.cut = true;
    run(1000);
    // An answer already on its way at the cut still counts; then nothing changes it.
    const last = status(a).lastSharePerS;
    expect(Math.abs(last / before - 1)).toBeLessThan(0.01);
    expect(status(a).mode).toBe("last_share");
    expect(status(a).sharePerS).toBe(last);
    run(3000);
    expect(status(a).sharePerS).toBe(last);
    run(1500);
    expect(status(a).mode).toBe("fallback");
    expect(status(a).sharePerS).toBeCloseTo(500, 6);
    a.link.cut = false;
    run(1000);
    expect(status(a).mode).toBe("connected");
    expect(status(a).lastContactAgoMs).toBeLessThan(300);
  });

  it("a global tier without the rule: the region keeps to limit / regions and says why, once", () => {
    const { run, a, status, warnings } = setup(5000, YAML.replace("orders", "other"));
    run(3000);
    expect(status(a).mode).toBe("fallback");
    expect(status(a).sharePerS).toBeCloseTo(500, 6);
    expect(
      warnings.filter((w) => w.includes("the global tier has no limit for this global key")),
    ).toHaveLength(2); // once per region
  });

  it("refuses options that make no sense, naming them", () => {
    const base = { servers: ["g:1"], transport: {} as never, clock: new ManualClock(0) };
    expect(() => new GlobalTier({ ...base, region: "" })).toThrow(InvalidArgumentError);
    expect(() => new GlobalTier({ ...base, region: "r", regions: 0 })).toThrow(
      /regions must be a positive integer/,
    );
    expect(() => new GlobalTier({ ...base, region: "r", fallbackAfterMs: -1 })).toThrow(/fallbackAfterMs/);
  });

  it("the link's state follows its calls: connected, unreachable when cut (said once), connected again", () => {
    const { run, a, warnings, infos } = setup(5000);
    expect(a.tier.status().link).toBe("connecting");
    run(1000);
    expect(a.tier.status().link).toBe("connected");
    a.link.cut = true;
    run(2000);
    const cut = a.tier.status();
    expect(cut.link).toBe("unreachable");
    expect(cut.linkError).toMatch(/deadline/);
    expect(warnings.filter((w) => w.startsWith("link unreachable") && w.endsWith("[region-a]"))).toHaveLength(
      1,
    );
    a.link.cut = false;
    run(1000);
    expect(a.tier.status().link).toBe("connected");
    expect(a.tier.status().linkError).toBeUndefined();
    expect(infos.filter((m) => m.startsWith("link connected") && m.endsWith("[region-a]"))).toHaveLength(2);
  });

  it("refused by the global tier (PERMISSION_DENIED), the link says so and the region falls back to limit / regions", () => {
    const refusing = (t: ClientTransport): ClientTransport =>
      Object.assign(Object.create(t) as ClientTransport, {
        report: (_a: string, _r: unknown, _t: number, done: (e: Error) => void) =>
          done(
            Object.assign(
              new Error('7 PERMISSION_DENIED: ReportAndGetPolicy refused for identity "anonymous"'),
              {
                code: 7,
              },
            ),
          ),
      });
    const { run, a, status, warnings } = setup(1000, YAML, refusing);
    run(3000);
    const s = a.tier.status();
    expect(s.link).toBe("refused");
    expect(s.linkError).toMatch(/PERMISSION_DENIED.*anonymous/);
    expect(status(a).mode).toBe("fallback");
    expect(status(a).sharePerS).toBeCloseTo(500, 6);
    expect(warnings.filter((w) => w.startsWith("link refused") && w.endsWith("[region-a]"))).toHaveLength(1);
  });

  it("status lists the most demanded keys (bounded), counts the rest, and counts every key by mode", () => {
    const { a, rule, clock } = setup();
    const n = GLOBAL_STATUS_KEYS + 5;
    for (let t = 0; t < 3; t++) {
      clock.advance(100);
      for (let i = 0; i < n; i++) {
        a.tier.reported(`api/orders=k${i}`, rule, i + 1, 0);
        a.tier.ruleFor(`api/orders=k${i}`, rule, clock.now());
      }
    }
    const s = a.tier.status();
    expect(s.keys).toHaveLength(GLOBAL_STATUS_KEYS);
    expect(s.more).toBe(5);
    expect(s.keys[0]!.key).toBe(`api/orders=k${n - 1}`);
    expect(s.keys.map((k) => k.demandPerS)).toEqual(
      [...s.keys.map((k) => k.demandPerS)].sort((x, y) => y - x),
    );
    expect(s.modes.connected + s.modes.last_share + s.modes.fallback).toBe(n);
    expect(s.region).toBe("region-a");
  });

  it("metrics: the link's state, keys counted by mode, per-key series only for the most demanded", async () => {
    const { a, rule, clock, run } = setup();
    run(1000);
    for (let i = 0; i < GLOBAL_STATUS_KEYS + 10; i++) {
      clock.advance(1);
      a.tier.reported(`api/orders=m${i}`, rule, 1, 0);
      a.tier.ruleFor(`api/orders=m${i}`, rule, clock.now());
    }
    const registry = new client.Registry();
    globalTierMetrics(registry, a.tier);
    const text = await registry.metrics();
    expect(text).toContain('shardlimit_global_link{state="connected"} 1');
    expect(text).toContain('shardlimit_global_link{state="refused"} 0');
    const byMode = GLOBAL_MODES_SUM(text);
    expect(byMode).toBe(GLOBAL_STATUS_KEYS + 11);
    const shares = text.split("\n").filter((l) => l.startsWith("shardlimit_global_share_per_second{"));
    expect(shares).toHaveLength(GLOBAL_STATUS_KEYS);
    expect(text).toContain(`shardlimit_global_share_per_second{key="${KEY}"}`);
  });
});

/** The sum of shardlimit_global_keys over its modes. */
function GLOBAL_MODES_SUM(text: string): number {
  let sum = 0;
  for (const m of text.matchAll(/^shardlimit_global_keys\{mode="[a-z_]+"\} (\d+)$/gm)) sum += Number(m[1]);
  return sum;
}
