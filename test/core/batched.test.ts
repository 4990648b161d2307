import { describe, expect, it } from "vitest";
import {
  Engine,
  type Limit,
  LocalKey,
  limitDefaults,
  ManualClock,
  PolicyKind,
} from "../../src/core/index.js";
import { seededRandom as rng } from "../../src/core/random.js";

interface Gateway {
  id: string;
  ratePerS: number;
  local: LocalKey;
  nextArrival: number;
  nextReport: number;
  seq: number;
}

/**
 * Gateways with Poisson arrivals deciding locally, reporting to the engine every `intervalMs`
 * (answers arrive at once). Returns the units admitted after `warmupMs`.
 */
function simulate(l: Limit, rates: number[], seconds: number, warmupMs = 5000, intervalMs = 100, seed = 1) {
  const rand = rng(seed);
  const clock = new ManualClock(1_700_000_000_000);
  const start = clock.now();
  const e = new Engine();
  const gws: Gateway[] = rates.map((r, i) => ({
    id: `gw${i}`,
    ratePerS: r,
    local: new LocalKey(1),
    nextArrival: start + (-Math.log(1 - rand()) * 1000) / r,
    nextReport: start + rand() * intervalMs,
    seq: 0,
  }));
  let admitted = 0;
  let offered = 0;
  const end = start + seconds * 1000;
  for (let t = start; t < end; t++) {
    clock.set(t);
    for (const g of gws) {
      while (g.nextArrival <= t) {
        const ok = g.local.decide(1, t, rand());
        if (t >= start + warmupMs) {
          offered++;
          if (ok) admitted++;
        }
        g.nextArrival += (-Math.log(1 - rand()) * 1000) / g.ratePerS;
      }
      if (t >= g.nextReport) {
        const counts = g.local.drain();
        g.seq++;
        const apply = e.acceptReport(g.id, g.seq, t) === "new";
        const p = e.report("k", l, g.id, { ...counts, held: 0, windowAdmitted: 0 }, apply, intervalMs, t);
        g.local.apply(p);
        g.nextReport += intervalMs;
      }
    }
  }
  const measuredS = (seconds * 1000 - warmupMs) / 1000;
  return { admitted, offered, perS: admitted / measuredS };
}

const tb1000 = limitDefaults({ algorithm: "token_bucket", limit: 1000, burst: 1000, windowMs: 1000 });

describe("batched mode: the policy loop converges on the limit", () => {
  it("steady overload, 20 gateways, one sending half: admitted within [0.99, 1.02] of the limit", () => {
    const rates = [1000, ...Array.from({ length: 19 }, () => 1000 / 19)];
    const r = simulate(tb1000, rates, 30);
    const ratio = r.perS / 1000;
    expect(ratio).toBeGreaterThanOrEqual(0.99);
    expect(ratio).toBeLessThanOrEqual(1.02);
  });

  it("under the limit nothing is rejected", () => {
    const rates = Array.from({ length: 20 }, () => 45);
    const r = simulate(tb1000, rates, 20);
    expect(r.admitted / r.offered).toBeGreaterThanOrEqual(0.999);
  });

  it("a heavy gateway does not starve light ones (Uber's case)", () => {
    const rates = [500, ...Array.from({ length: 9 }, () => 10)];
    const r = simulate(tb1000, rates, 20);
    expect(r.admitted / r.offered).toBeGreaterThanOrEqual(0.999);
  });

  it("a fixed window in batched mode admits about the limit per window", () => {
    const fw = limitDefaults({ algorithm: "fixed_window", limit: 1000, windowMs: 1000 });
    const rates = Array.from({ length: 10 }, () => 300);
    const r = simulate(fw, rates, 20);
    expect(r.perS / 1000).toBeGreaterThanOrEqual(0.98);
    expect(r.perS / 1000).toBeLessThanOrEqual(1.02);
  });

  it("over the limit, light gateways keep their demand while the heavy one is cut (max-min fair)", () => {
    const e = new Engine();
    const l = limitDefaults({ algorithm: "token_bucket", limit: 100, burst: 1, windowMs: 1000 });
    const t = 1_700_000_000_000;
    // Heavy: 900/s offered; light: 10/s each. Capacity 100/s: light get 10, heavy gets the rest.
    for (let i = 0; i < 5; i++) {
      e.report(
        "k",
        l,
        "heavy",
        { admitted: 0, rejected: 90, held: 0, windowAdmitted: 0 },
        true,
        100,
        t + i * 100,
      );
      e.report(
        "k",
        l,
        "light1",
        { admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 },
        true,
        100,
        t + i * 100,
      );
      e.report(
        "k",
        l,
        "light2",
        { admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 },
        true,
        100,
        t + i * 100,
      );
    }
    const heavy = e.report(
      "k",
      l,
      "heavy",
      { admitted: 0, rejected: 90, held: 0, windowAdmitted: 0 },
      true,
      100,
      t + 500,
    );
    const light = e.report(
      "k",
      l,
      "light1",
      { admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 },
      true,
      100,
      t + 500,
    );
    expect(heavy.kind).toBe(PolicyKind.REJECT_FRACTION);
    // Share ~90/s of 900/s offered (refill 100/s plus the bucket's one unit spent over an interval,
    // less the light gateways' 20/s), paced at 1.5x: about 0.85 rejected.
    expect(heavy.fraction).toBeGreaterThan(0.8);
    expect(light.kind).toBe(PolicyKind.GRANT);
    expect(light.units).toBeGreaterThanOrEqual(1);
  });

  it("an exhausted fixed window answers REJECT_UNTIL the window ends", () => {
    const e = new Engine();
    const l = limitDefaults({ algorithm: "fixed_window", limit: 10, windowMs: 60_000 });
    const t = 1_700_000_080_000; // 40 s into the minute window that started at ...040_000
    const p = e.report("k", l, "gw", { admitted: 10, rejected: 5, held: 0, windowAdmitted: 0 }, true, 100, t);
    expect(p.kind).toBe(PolicyKind.REJECT_UNTIL);
    expect(p.until).toBe(1_700_000_100_000);
  });

  it("a retried report (same client, same sequence number) is counted once", () => {
    const e = new Engine();
    const l = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 60_000 });
    const t = 1_700_000_040_000;
    const entry = { admitted: 30, rejected: 0, held: 0, windowAdmitted: 0 };
    for (let i = 0; i < 3; i++) {
      const apply = e.acceptReport("gw", 7, t) === "new";
      e.report("k", l, "gw", entry, apply, 100, t);
    }
    expect(e.peek("k", l, t).remaining).toBe(70);
  });

  it("a re-sent window total rebuilds the count on a new owner, once", () => {
    const e = new Engine();
    const l = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 60_000 });
    const t = 1_700_000_040_000;
    e.report("k", l, "gw1", { admitted: 2, rejected: 0, held: 0, windowAdmitted: 40 }, true, 100, t);
    e.report("k", l, "gw2", { admitted: 1, rejected: 0, held: 0, windowAdmitted: 25 }, true, 100, t);
    e.report("k", l, "gw1", { admitted: 3, rejected: 0, held: 0, windowAdmitted: 43 }, true, 100, t + 100);
    expect(e.peek("k", l, t + 100).remaining).toBe(100 - 40 - 25 - 3);
  });
});
