import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import type { LimitConfig } from "../../src/config/types.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { PolicyKind } from "../../src/core/policy.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import { EnvoyCode, type PoolReportRequest, PriorityMsg } from "../../src/protocol/messages.js";
import { EnvoyRateLimit } from "../../src/server/envoy.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import type { Ownership } from "../../src/server/ownership.js";
import { StandaloneOwnership } from "../../src/server/ownership.js";

/**
 * Pools at the owner (issue 14): backends' reports validated and kept; while the pool is over its
 * target Check, ShouldRateLimit and batched policies shed by class before any quota is charged;
 * while it is idle, requests over their quotas are served from the idle capacity.
 */

const T0 = Date.UTC(2030, 0, 1);

const YAML = `domain: api
pools:
  gpu: { target: 0.8, idle_below: 0.6 }
descriptors:
  - key: model
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 10, pool: gpu }
  - key: plain
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000 }
  - key: big
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000, pool: gpu }
`;

function setup(ownership: Ownership = new StandaloneOwnership("x:1")) {
  const clock = new ManualClock(T0);
  const config: LimitConfig = compileSources([{ file: "p.yaml", text: YAML }]);
  const engine = new Engine();
  const deps = { engine, clock, ownership, limits: DEFAULT_INPUT_LIMITS, metrics: noopMetrics };
  const limiter = new Limiter({ ...deps, config });
  const envoy = new EnvoyRateLimit(
    { ...deps, pools: limiter.pools },
    (d, e) => config.resolve(d, e),
    (d) => config.domains.includes(d),
  );
  /** Backends report `utilisation` every 50 ms for `ms`. */
  const load = (utilisation: number, ms: number) => {
    for (let t = 0; t < ms; t += 50) {
      const res = limiter.pools.report(req({ utilisation }), clock.now());
      expect(res.error).toBeUndefined();
      clock.advance(50);
    }
  };
  return { clock, limiter, envoy, load };
}

function req(over: Partial<PoolReportRequest> = {}): PoolReportRequest {
  return { pool: "gpu", backend: "b1", utilisation: 0.5, capacity: 100, generation: 0, ...over };
}

const check = (limiter: Limiter, key: string, priority: number = PriorityMsg.NORMAL) =>
  limiter.check({ items: [{ key, cost: 1, priority }], generation: 0, atomic: false }).results[0]!;

describe("PoolReport", () => {
  it("answers with the pool's mode, level and per-class fractions", () => {
    const { limiter, load } = setup();
    load(1, 1000);
    const res = limiter.pools.report(req({ utilisation: 1 }), T0 + 1000);
    expect(res.mode).toBe("overloaded");
    expect(res.level).toBeLessThan(0);
    expect(res.fractions).toHaveLength(4);
    expect(res.utilisation).toBe(1);
  });

  it.each([
    [{ pool: "tpu" }, ErrorCode.INVALID_KEY, 'no pool named "tpu" (pools: "gpu")'],
    [{ backend: "" }, ErrorCode.INVALID_KEY, "backend must be 1-256 characters, got 0"],
    [{ utilisation: 1.5 }, ErrorCode.INVALID_AMOUNT, "utilisation must be within [0, 1], got 1.5"],
    [{ utilisation: Number.NaN }, ErrorCode.INVALID_AMOUNT, "utilisation must be within [0, 1], got NaN"],
    [{ capacity: 0 }, ErrorCode.INVALID_AMOUNT, "capacity must be above 0, got 0"],
    [{ generation: 7 }, ErrorCode.NOT_OWNER, "has not confirmed generation 7"],
  ] as const)("refuses %o, naming what is wrong, and keeps nothing", (over, code, message) => {
    const { limiter, clock } = setup();
    const res = limiter.pools.report(req(over), clock.now());
    expect(res.error?.code).toBe(code);
    expect(res.error?.message).toContain(message);
    expect(limiter.pools.snapshots(clock.now())[0]!.backends).toBe(0);
  });

  it("a server that does not own the pool's key says so", () => {
    const notOwner: Ownership = Object.assign(new StandaloneOwnership("x:1"), {
      check: () => "not_owner" as const,
    });
    const { limiter, clock } = setup(notOwner);
    const res = limiter.pools.report(req(), clock.now());
    expect(res.error?.code).toBe(ErrorCode.NOT_OWNER);
    expect(res.error?.message).toContain("not the owner of pool gpu");
  });
});

describe("overloaded: shed by class before the quota", () => {
  it("Check sheds low before critical and charges no quota for what it shed", () => {
    const { limiter, clock, load } = setup();
    // Offer both classes so the pool measures them, while it is over its target for 0.5 s.
    for (let i = 0; i < 10; i++) {
      check(limiter, "api/model=a", PriorityMsg.LOW);
      check(limiter, "api/model=b", PriorityMsg.CRITICAL);
      load(1, 50);
    }
    const fractions = limiter.pools.snapshots(clock.now())[0]!.fractions;
    expect(fractions[0]).toBeGreaterThan(0.5);
    expect(fractions.slice(1)).toEqual([0, 0, 0]);
    // A key with a full bucket (10), at the same instant: the pool does not step in between.
    let shed = 0;
    for (let i = 0; i < 8; i++) {
      const low = check(limiter, "api/model=c", PriorityMsg.LOW);
      if (!low.allowed) {
        expect(low.rule).toBe("api/model");
        shed++;
      }
    }
    expect(shed).toBe(Math.round(8 * fractions[0]!));
    // Only what was admitted was charged: 10 - (8 - shed) left.
    const rule = limiter.config.resolve("api", [{ key: "model", value: "c" }])!.rule;
    expect(limiter.engine.peek("api/model=c", rule, clock.now()).remaining).toBeCloseTo(10 - (8 - shed), 0);
    expect(check(limiter, "api/model=b", PriorityMsg.CRITICAL).allowed).toBe(true);
    // A limit not attached to the pool is untouched.
    expect(check(limiter, "api/plain=x", PriorityMsg.LOW).allowed).toBe(true);
  });

  it("ShouldRateLimit sheds the same way", () => {
    const { limiter, envoy, load } = setup();
    const ask = (priority: string) =>
      envoy.shouldRateLimit({
        domain: "api",
        descriptors: [
          {
            entries: [
              { key: "model", value: "m" },
              { key: "priority", value: priority },
            ],
          },
        ],
        hitsAddend: 0,
      }).overallCode;
    for (let i = 0; i < 20; i++) {
      ask("low");
      ask("critical");
      load(1, 50);
    }
    expect(ask("low")).toBe(EnvoyCode.OVER_LIMIT);
    expect(limiter.pools.snapshots(T0)[0]!.mode).toBe("overloaded");
  });

  it("a batched gateway's policy carries its class's fraction", () => {
    const { limiter, load } = setup();
    const entry = (key: string) => ({ key, admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 });
    let policies: ReturnType<Limiter["reportAndGetPolicy"]>["policies"] = [];
    for (let seq = 1; seq <= 10; seq++) {
      const res = limiter.reportAndGetPolicy({
        clientId: "gw",
        seq,
        generation: 0,
        intervalMs: 100,
        keyEpoch: 0,
        entries: [
          entry("api/big=a/priority=low"),
          entry("api/big=a/priority=critical"),
          entry("api/plain=x"),
        ],
      });
      policies = res.policies;
      load(1, 50);
    }
    const [low, critical, plain] = policies;
    // Shed whole (REJECT_UNTIL) or in part, but shed.
    if (low!.kind !== PolicyKind.REJECT_UNTIL) {
      expect(low!.kind).toBe(PolicyKind.REJECT_FRACTION);
      expect(low!.fraction).toBeGreaterThan(0.5);
    }
    expect(critical!.kind).not.toBe(PolicyKind.REJECT_UNTIL);
    // Quotas far from full: no fraction from them.
    expect(critical!.fraction ?? 0).toBe(0);
    expect(plain!.fraction ?? 0).toBe(0);
  });
});

describe("idle: requests over their quotas served from idle capacity", () => {
  it("Check admits past the quota, uncharged, while the pool is idle, and stops when it is not", () => {
    const { limiter, clock, load } = setup();
    load(0.2, 2000);
    expect(limiter.pools.snapshots(clock.now())[0]!.mode).toBe("idle");
    // 20/s for a quota of 10/s: after a second to learn the demand, the loans cover the rest.
    let admitted = 0;
    for (let i = 0; i < 60; i++) {
      if (check(limiter, "api/model=a").allowed && i >= 20) admitted++;
      load(0.2, 50);
    }
    // The quota alone admits 20 of these 40.
    expect(admitted).toBeGreaterThanOrEqual(34);
    // Load returns (the loans on top of it take the pool past its target): the pool leaves idle
    // within a second and the quota decides alone again.
    load(0.95, 1000);
    expect(limiter.pools.snapshots(clock.now())[0]!.mode).not.toBe("idle");
    let after = 0;
    for (let i = 0; i < 40; i++) {
      if (check(limiter, "api/model=a").allowed) after++;
      load(0.75, 50);
    }
    expect(limiter.pools.snapshots(clock.now())[0]!.mode).toBe("quota");
    expect(after).toBeLessThanOrEqual(10 * 2 + 10);
    expect(after).toBeGreaterThanOrEqual(15);
  });
});

describe("reload", () => {
  it("keeps a kept pool's controller, takes a new target, and drops a removed pool", () => {
    const { limiter, clock, load } = setup();
    load(1, 1000);
    const before = limiter.pools.snapshots(clock.now())[0]!;
    expect(before.level).toBeLessThan(0);
    limiter.setConfig(compileSources([{ file: "p.yaml", text: YAML.replace("target: 0.8", "target: 0.9") }]));
    const kept = limiter.pools.snapshots(clock.now())[0]!;
    expect([kept.target, kept.level]).toEqual([0.9, before.level]);
    const without = YAML.replace("pools:\n  gpu: { target: 0.8, idle_below: 0.6 }\n", "").replaceAll(
      ", pool: gpu",
      "",
    );
    limiter.setConfig(compileSources([{ file: "p.yaml", text: without }]));
    expect(limiter.pools.snapshots(clock.now())).toEqual([]);
    expect(limiter.pools.report(req(), clock.now()).error?.message).toBe('no pool named "gpu" (pools: none)');
  });
});
