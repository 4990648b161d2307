import { describe, expect, it } from "vitest";
import { Engine } from "../../src/core/engine.js";
import { type Limit, limitDefaults } from "../../src/core/limit.js";
import { PRIORITY_RANK, type Priority } from "../../src/core/priority.js";
import { seededRandom } from "../../src/core/random.js";

/**
 * Synchronous decisions on one contended limit, with Poisson arrivals per sender on exact virtual
 * time: what each sender gets of its demand.
 */

interface Sender {
  /** Requests per second. */
  rate: number;
  subject?: string;
  weight?: number;
  priority?: Priority;
}

const T0 = 1_800_000_000_000; // a whole minute

function run(l: Limit, senders: Sender[], seconds = 30, warmupS = 5, seed = 7) {
  const rand = seededRandom(seed);
  const e = new Engine();
  const next = senders.map((s) => T0 + (-Math.log(1 - rand()) * 1000) / s.rate);
  const offered = senders.map(() => 0);
  const admitted = senders.map(() => 0);
  const end = T0 + seconds * 1000;
  const from = T0 + warmupS * 1000;
  for (;;) {
    let i = 0;
    for (let k = 1; k < next.length; k++) if (next[k]! < next[i]!) i = k;
    const now = next[i]!;
    if (now >= end) break;
    const s = senders[i]!;
    const [d] = e.checkMany(
      [
        {
          key: "g",
          limit: l,
          cost: 1,
          ...(s.subject !== undefined ? { subject: s.subject, weight: s.weight ?? 1 } : {}),
          ...(s.priority ? { rank: PRIORITY_RANK[s.priority] } : {}),
        },
      ],
      now,
      "strict",
    );
    if (now >= from) {
      offered[i]!++;
      if (d!.allowed) admitted[i]!++;
    }
    next[i] = now + (-Math.log(1 - rand()) * 1000) / s.rate;
  }
  const span = seconds - warmupS;
  return {
    share: admitted.map((a, i) => a / offered[i]!),
    perS: admitted.map((a) => a / span),
    total: admitted.reduce((a, b) => a + b, 0) / span,
  };
}

const fairGroup = (algorithm: "fixed_window" | "token_bucket") =>
  limitDefaults({ algorithm, limit: 1000, windowMs: 1000, fairShare: { by: "tenant", weights: new Map() } });

describe("contention: fair share and priorities in synchronous decisions", () => {
  for (const algorithm of ["fixed_window", "token_bucket"] as const) {
    it(`${algorithm}: a heavy tenant cannot crowd out light ones; the group stays at its limit`, () => {
      const r = run(fairGroup(algorithm), [
        { rate: 5000, subject: "heavy" },
        ...["a", "b", "c", "d"].map((t) => ({ rate: 50, subject: t })),
      ]);
      for (const light of r.share.slice(1)) expect(light).toBeGreaterThanOrEqual(0.999);
      expect(r.total / 1000).toBeGreaterThanOrEqual(0.98);
      expect(r.total / 1000).toBeLessThanOrEqual(1.02);
    });

    it(`${algorithm}: two heavy tenants with weights 3 and 1 split the group 3:1`, () => {
      const r = run(fairGroup(algorithm), [
        { rate: 3000, subject: "gold", weight: 3 },
        { rate: 3000, subject: "std", weight: 1 },
      ]);
      expect(r.perS[0]! / r.perS[1]!).toBeGreaterThan(3 * 0.95);
      expect(r.perS[0]! / r.perS[1]!).toBeLessThan(3 * 1.05);
      expect(r.total / 1000).toBeGreaterThanOrEqual(0.98);
    });

    it(`${algorithm}: critical traffic is admitted whatever low traffic does`, () => {
      const l = limitDefaults({ algorithm, limit: 1000, windowMs: 1000 });
      const r = run(l, [
        { rate: 300, priority: "critical" },
        { rate: 2000, priority: "low" },
      ]);
      expect(r.share[0]).toBeGreaterThanOrEqual(0.999);
      expect(r.total / 1000).toBeGreaterThanOrEqual(0.98);
      expect(r.total / 1000).toBeLessThanOrEqual(1.02);
    });

    it(`${algorithm}: a reserve for critical is never taken by low, even with no critical traffic`, () => {
      const l = limitDefaults({ algorithm, limit: 1000, windowMs: 1000, reserve: { critical: 0.2 } });
      const r = run(l, [{ rate: 2000, priority: "low" }]);
      expect(r.perS[0]! / 1000).toBeLessThanOrEqual(0.8);
      expect(r.perS[0]! / 1000).toBeGreaterThan(0.78);
    });
  }

  it("a request shed to keep a reserve is told to retry when the counter holds its cost and the reserve", () => {
    for (const algorithm of ["fixed_window", "token_bucket"] as const) {
      const l = limitDefaults({ algorithm, limit: 1000, windowMs: 1000, reserve: { critical: 0.2 } });
      const e = new Engine();
      const at = T0 + 100;
      const low = (cost: number) =>
        e.checkMany([{ key: "g", limit: l, cost, rank: PRIORITY_RANK.low }], at, "strict")[0]!;
      let d = low(20);
      for (let n = 0; d.allowed && n < 100; n++) d = low(20);
      expect(d.allowed).toBe(false);
      expect(d.reason?.kind).toBe("priority");
      const { kept = 0, available = 0 } = d.reason!;
      expect(kept).toBeGreaterThanOrEqual(200);
      // Fixed window: nothing comes back before the next window. Token bucket (1 unit/ms): when
      // it holds the cost and what is kept, not the cost alone (there now).
      expect(available).toBeGreaterThanOrEqual(20);
      const want = algorithm === "fixed_window" ? T0 + 1000 : at + Math.ceil(20 + kept - available);
      expect(d.retryAt).toBe(want);
    }
  });

  it("a tenant paced at its fair share is told to retry when its pace has put the cost back", () => {
    const l = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 1000 });
    const e = new Engine();
    const check = (subject: string, now: number) =>
      e.checkMany([{ key: "g", limit: l, cost: 1, subject }], now, "strict")[0]!;
    let now = T0 + 100;
    const paced: number[] = [];
    for (let i = 0; i < 400; i++) {
      now += 2.5; // big asks 400/s
      const d = check("big", now);
      if (i % 10 === 0) check("small", now); // small asks 40/s
      if (!d.allowed && d.reason?.kind === "fair_share") paced.push(d.retryAt - now);
    }
    expect(paced.length).toBeGreaterThan(50);
    // The window has room (its shares are paced through it), so "the counter holds the cost"
    // alone said now: a 1 ms hint while the pace holds big at ~60/s, one unit per ~16 ms.
    expect(Math.min(...paced)).toBeGreaterThan(0);
    expect(Math.max(...paced)).toBeGreaterThan(5);
  });

  it("without classes or tenants it is first come, first served as before", () => {
    const l = limitDefaults({ algorithm: "fixed_window", limit: 1000, windowMs: 1000 });
    const r = run(l, [{ rate: 5000 }, { rate: 50 }]);
    // FCFS: the light sender loses most of what arrives after the window filled.
    expect(r.share[1]).toBeLessThan(0.5);
    expect(r.total).toBeCloseTo(1000, -1);
  });
});

describe("contention state and the sweeper", () => {
  it("a counter whose senders are paced is not swept while they ask, though its bucket is full", () => {
    const l = limitDefaults({
      algorithm: "token_bucket",
      limit: 200,
      windowMs: 1000,
      reserve: { critical: 0.2 },
    });
    const e = new Engine();
    let now = T0;
    let admitted = 0;
    // Low at 400/s against a cap of 160/s: paced, the bucket stays nearly full (refill 200/s).
    for (let i = 0; i < 4000; i++) {
      now += 2.5;
      if (e.checkMany([{ key: "k", limit: l, cost: 1, rank: PRIORITY_RANK.low }], now, "strict")[0]!.allowed)
        if (i >= 2000) admitted++;
      // The server sweeps every 50 ms; a counter "as good as new" would lose what it knows of
      // its senders' demand, and a fresh one admits them all until it relearns.
      if (i % 20 === 0) e.sweep(now + 10, 1000);
    }
    expect(admitted / 5).toBeLessThanOrEqual(161);
    expect(admitted / 5).toBeGreaterThan(150);
  });
});
