import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { PolicyKind } from "../../src/core/policy.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { EnvoyCode } from "../../src/protocol/messages.js";
import { EnvoyRateLimit } from "../../src/server/envoy.js";
import type { GlobalShares } from "../../src/server/global-shares.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import { StandaloneOwnership } from "../../src/server/ownership.js";
import { FixedShare } from "./fixed-share.js";

/**
 * The regional owner of a `global: true` limit divides the region's share (from the GlobalShares
 * port) instead of the configured limit, and passes its gateways' counts on; other limits are
 * untouched. A global owner (no port) sends each gateway its fair part of the rate (`share_per_s`).
 */

const YAML = `domain: api
descriptors:
  - key: orders
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000, global: true }
  - key: local
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000 }
`;
const T0 = 1_000_000;

function limiter(global?: GlobalShares) {
  const clock = new ManualClock(T0);
  const l = new Limiter({
    engine: new Engine(),
    clock,
    config: compileSources([{ file: "g.yaml", text: YAML }]),
    ownership: new StandaloneOwnership("self:1", clock),
    limits: DEFAULT_INPUT_LIMITS,
    metrics: noopMetrics,
    global,
  });
  let seq = 0;
  /** One gateway's report of `admitted` and `rejected` units of `key` over the last 100 ms. */
  const report = (key: string, admitted: number, rejected: number, clientId = "gw1") => {
    clock.advance(100);
    const res = l.reportAndGetPolicy({
      clientId,
      seq: ++seq,
      generation: 0,
      intervalMs: 100,
      keyEpoch: 0,
      entries: [{ key, admitted, rejected, held: 0, windowAdmitted: 0 }],
    });
    return res.policies[0]!;
  };
  return { l, clock, report };
}

describe("a global limit in a region", () => {
  it("is divided at the region's share: 1000/s configured, 100/s share, a gateway offering 500/s is held to ~100/s", () => {
    const share = new FixedShare(100);
    const { report } = limiter(share);
    let granted = 0;
    // Ten seconds of reports: it admits what it was granted, the rest is rejected.
    let p = report("api/orders=o", 0, 50);
    for (let i = 0; i < 100; i++) {
      const admit = Math.min(p.units ?? 0, 50);
      granted += admit;
      p = report("api/orders=o", admit, 50 - admit);
    }
    expect(p.kind).toBe(PolicyKind.REJECT_FRACTION);
    // About 10 s at 100/s (the burst of 100 on top), far from the configured 1000/s.
    expect(granted).toBeGreaterThan(900);
    expect(granted).toBeLessThan(1150);
  });

  it("passes its gateways' counts on to the global tier, net of refunds; a plain limit's it does not", () => {
    const share = new FixedShare(100);
    const { l, clock } = limiter(share);
    clock.advance(100);
    l.reportAndGetPolicy({
      clientId: "gw1",
      seq: 1,
      generation: 0,
      intervalMs: 100,
      keyEpoch: 0,
      entries: [
        { key: "api/orders=o", admitted: 7, rejected: 3, held: 0, windowAdmitted: 0, refunded: 2 },
        { key: "api/local=x", admitted: 5, rejected: 0, held: 0, windowAdmitted: 0 },
      ],
    });
    expect(share.seen).toEqual([["api/orders=o", 5, 3]]);
  });

  it("a duplicate report (a resend) is not passed on again", () => {
    const share = new FixedShare(100);
    const { l, clock } = limiter(share);
    const req = {
      clientId: "gw1",
      seq: 1,
      generation: 0,
      intervalMs: 100,
      keyEpoch: 0,
      entries: [{ key: "api/orders=o", admitted: 4, rejected: 0, held: 0, windowAdmitted: 0 }],
    };
    clock.advance(100);
    l.reportAndGetPolicy(req);
    l.reportAndGetPolicy(req);
    expect(share.seen).toEqual([["api/orders=o", 4, 0]]);
  });
});

describe("a global limit in a region, decided synchronously", () => {
  it("Check charges the region's share and passes each decision on: 100/s share, 300 checks in a second", () => {
    const share = new FixedShare(100);
    const { l, clock } = limiter(share);
    let allowed = 0;
    for (let i = 0; i < 300; i++) {
      clock.advance(1000 / 300);
      const res = l.check({ items: [{ key: "api/orders=o", cost: 1 }], atomic: false, generation: 0 });
      if (res.results[0]!.allowed) allowed++;
      // The answer names the configured limit.
      expect(res.results[0]!.limit).toBe(1000);
    }
    // The burst (the share's second, 100) and a second's refill: about 200, not 300.
    expect(allowed).toBeGreaterThan(190);
    expect(allowed).toBeLessThan(210);
    const admitted = share.seen.reduce((s, x) => s + x[1], 0);
    const refused = share.seen.reduce((s, x) => s + x[2], 0);
    expect([admitted, refused]).toEqual([allowed, 300 - allowed]);
  });

  it("ShouldRateLimit does the same", () => {
    const share = new FixedShare(100);
    const clock = new ManualClock(T0);
    const config = compileSources([{ file: "g.yaml", text: YAML }]);
    const envoy = new EnvoyRateLimit(
      {
        engine: new Engine(),
        clock,
        ownership: new StandaloneOwnership("self:1", clock),
        limits: DEFAULT_INPUT_LIMITS,
        metrics: noopMetrics,
        global: share,
      },
      (domain, entries) => config.resolve(domain, entries),
      (domain) => config.domains.includes(domain),
    );
    let ok = 0;
    for (let i = 0; i < 300; i++) {
      clock.advance(1000 / 300);
      const res = envoy.shouldRateLimit({
        domain: "api",
        descriptors: [{ entries: [{ key: "orders", value: "o" }] }],
        hitsAddend: 0,
      });
      if (res.overallCode === EnvoyCode.OK) ok++;
    }
    expect(ok).toBeGreaterThan(190);
    expect(ok).toBeLessThan(210);
    expect(share.seen.reduce((s, x) => s + x[1], 0)).toBe(ok);
  });

  it("a plain limit's Check is neither shared nor passed on", () => {
    const share = new FixedShare(100);
    const { l } = limiter(share);
    for (let i = 0; i < 300; i++)
      l.check({ items: [{ key: "api/local=x", cost: 1 }], atomic: false, generation: 0 });
    expect(share.seen).toEqual([]);
  });
});

describe("a global limit at the global tier (no GlobalShares)", () => {
  it("sends each gateway (region) its max-min part of the limit's rate: 800/s and 100/s asking share 1000/s", () => {
    const { report } = limiter();
    let a = report("api/orders=o", 80, 0, "region-a");
    let b = report("api/orders=o", 10, 0, "region-b");
    for (let i = 0; i < 30; i++) {
      a = report("api/orders=o", 40, 0, "region-a");
      b = report("api/orders=o", 5, 0, "region-b");
    }
    // Each reports every 200 ms here: 200/s and 25/s asked; the surplus is split equally.
    expect(a.sharePerS! + b.sharePerS!).toBeCloseTo(1000, 0);
    expect(b.sharePerS!).toBeGreaterThan(25);
    expect(a.sharePerS!).toBeGreaterThan(b.sharePerS!);
  });

  it("sends no share for a limit that is not global", () => {
    const { report } = limiter();
    expect(report("api/local=x", 5, 0).sharePerS).toBeUndefined();
  });
});
