import { describe, expect, it } from "vitest";
import { CapacityError, Engine, limitDefaults, ManualClock } from "../../src/core/index.js";

const T0 = 1_700_000_000_000;
const fw = (limit: number, windowMs = 1000) => limitDefaults({ algorithm: "fixed_window", limit, windowMs });
const tb = (limit: number, burst = limit) => limitDefaults({ algorithm: "token_bucket", limit, burst });

describe("engine", () => {
  it("atomic: all items admitted together or none, and a rejection changes nothing", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const tenant = fw(10);
    const group = fw(3);
    const items = [
      { key: "tenant", limit: tenant, cost: 2 },
      { key: "group", limit: group, cost: 2 },
    ];
    expect(e.checkMany(items, clock.now(), "atomic").map((d) => d.allowed)).toEqual([true, true]);
    expect(e.checkMany(items, clock.now(), "atomic").map((d) => d.allowed)).toEqual([false, false]);
    expect(e.peek("tenant", tenant, clock.now()).remaining).toBe(8);
    expect(e.peek("group", group, clock.now()).remaining).toBe(1);
    // Strict: each item on its own.
    expect(e.checkMany(items, clock.now(), "strict").map((d) => d.allowed)).toEqual([true, false]);
    expect(e.peek("tenant", tenant, clock.now()).remaining).toBe(6);
  });

  it("two items on one counter in one call cannot both pass on the same remaining units", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = fw(3);
    const d = e.checkMany(
      [
        { key: "k", limit: l, cost: 2 },
        { key: "k", limit: l, cost: 2 },
      ],
      clock.now(),
      "strict",
    );
    expect(d.map((x) => x.allowed)).toEqual([true, false]);
    expect(e.peek("k", l, clock.now()).remaining).toBe(1);
  });

  it("a rejected item holds nothing back from later items on the same counter", () => {
    const e = new Engine();
    const l = fw(10);
    const d = e.checkMany(
      [
        { key: "k", limit: l, cost: 11 },
        { key: "k", limit: l, cost: 2 },
      ],
      T0,
      "strict",
    );
    expect(d.map((x) => x.allowed)).toEqual([false, true]);
    expect(e.peek("k", l, T0).remaining).toBe(8);
  });

  it("items on shared counters hold units back alike in short calls (summed) and long ones (a Map)", () => {
    // One block of items, alone (a short call) and four times over (a long one): two counters
    // interleaved, a rejected item that holds nothing back, and a shadow-mode limit whose items
    // hold back what they take even when over it.
    const l = fw(5);
    const shadow = { ...fw(3), shadowMode: true };
    const block = [
      { key: "k0", limit: l, cost: 2 },
      { key: "s", limit: shadow, cost: 2 },
      { key: "k0", limit: l, cost: 9 },
      { key: "s", limit: shadow, cost: 2 },
      { key: "k0", limit: l, cost: 2 },
      { key: "s", limit: shadow, cost: 1 },
    ];
    for (const times of [1, 4]) {
      const items = Array.from({ length: times }, () => block).flat();
      const d = new Engine().checkMany(items, T0, "strict");
      // What a walk over the items one at a time decides, counter by counter.
      const left = new Map<string, number>([
        ["k0", 5],
        ["s", 3],
      ]);
      const want = items.map((it) => {
        const fits = left.get(it.key)! >= it.cost;
        if (fits || it.limit.shadowMode) left.set(it.key, left.get(it.key)! - it.cost);
        return { allowed: fits || it.limit.shadowMode, shadowed: it.limit.shadowMode && !fits };
      });
      expect(d.map((x) => ({ allowed: x.allowed, shadowed: x.shadowed }))).toEqual(want);
    }
  });

  it("unlimited limits create no counter", () => {
    const e = new Engine();
    const l = { ...fw(1), unlimited: true };
    for (let i = 0; i < 5; i++) expect(e.check("k", l, 100, T0).allowed).toBe(true);
    expect(e.size).toBe(0);
  });

  it("peek reads without creating or changing a counter", () => {
    const e = new Engine();
    expect(e.peek("k", tb(5), T0).remaining).toBe(5);
    expect(e.size).toBe(0);
  });

  it("idle counters expire: a full bucket or a finished window is swept, a live one is kept", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    e.check("window", fw(5, 1000), 1, clock.now());
    e.check("bucket", tb(10), 5, clock.now()); // refills in 500 ms
    clock.advance(400);
    expect(e.sweep(clock.now())).toBe(0);
    clock.advance(100);
    expect(e.sweep(clock.now())).toBe(1); // bucket full again
    clock.advance(500);
    expect(e.sweep(clock.now())).toBe(1); // window over
    expect(e.size).toBe(0);
  });

  it("a counter with a held lease or a reporting gateway is not swept", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const cc = limitDefaults({ algorithm: "concurrency", limit: 2, leaseTimeoutMs: 5000 });
    e.acquire("c", cc, "lease", 1, clock.now());
    e.report(
      "r",
      fw(100),
      "gw",
      { admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 },
      true,
      100,
      clock.now(),
    );
    clock.advance(999);
    expect(e.sweep(clock.now())).toBe(0);
    clock.advance(5001);
    expect(e.sweep(clock.now())).toBe(2);
  });

  it("sweeps a large table in slices", () => {
    const e = new Engine();
    for (let i = 0; i < 100; i++) e.check(`k${i}`, fw(5), 1, T0);
    let removed = 0;
    let calls = 0;
    while (e.size > 0 && calls < 100) {
      removed += e.sweep(T0 + 10_000, 30);
      calls++;
    }
    expect(removed).toBe(100);
    expect(calls).toBeGreaterThanOrEqual(4);
  });

  it("refuses new keys past maxCounters, keeps serving known ones", () => {
    const e = new Engine({ maxCounters: 2 });
    e.check("a", fw(5), 1, T0);
    e.check("b", fw(5), 1, T0);
    expect(() => e.check("c", fw(5), 1, T0)).toThrow(CapacityError);
    expect(e.check("a", fw(5), 1, T0).remaining).toBe(3);
  });

  it("a counter reference is marked removed when swept or replaced, so cached references refresh", () => {
    const e = new Engine();
    const c = e.counterFor("k", fw(5), T0);
    expect(e.counterFor("k", fw(5), T0)).toBe(c);
    const c2 = e.counterFor("k", tb(5), T0);
    expect(c.removed).toBe(true);
    e.sweep(T0 + 60_000);
    expect(c2.removed).toBe(true);
  });
});
