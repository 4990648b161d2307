import { describe, expect, it } from "vitest";
import type { PointRange } from "../../src/core/counter-table.js";
import { ReportDedup } from "../../src/core/dedup.js";
import { Engine } from "../../src/core/engine.js";
import { limitDefaults } from "../../src/core/limit.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";

const T0 = 1_700_000_000_000;
const tb = limitDefaults({ algorithm: "token_bucket", limit: 100, windowMs: 60_000 });

/** FNV-1a: a stand-in for the cluster's keyPoint (the core must not import the key space). */
function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** A small seeded generator, so a failure repeats. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function randomRanges(r: () => number): PointRange[] {
  const cuts = Array.from({ length: 1 + Math.floor(r() * 8) }, () => Math.floor(r() * 2 ** 32)).sort(
    (a, b) => a - b,
  );
  const bounds = [0, ...cuts, 2 ** 32];
  const out: PointRange[] = [];
  for (let i = 0; i + 1 < bounds.length; i++)
    if (r() < 0.5 && bounds[i]! < bounds[i + 1]!) out.push({ start: bounds[i]!, end: bounds[i + 1]! });
  return out.reverse(); // any order in, sorted inside
}

const inside = (ranges: PointRange[], p: number) => ranges.some((r) => p >= r.start && p < r.end);

function fill(e: Engine, n: number, r: () => number): string[] {
  const keys: string[] = [];
  for (let i = 0; i < n; i++) {
    const key = `k/${Math.floor(r() * 1e9)}/${i}`;
    // A third co-located under a group's shard key.
    const shard = i % 3 === 0 ? `group/${i % 17}` : key;
    e.counterFor(key, tb, T0, shard);
    e.check(key, tb, 1, T0);
    keys.push(key);
  }
  return keys;
}

function takeAll(
  e: Engine,
  ranges: PointRange[],
  budget: number,
): { counters: CounterSnapshot[]; calls: number } {
  const take = e.takeRanges(ranges, fnv);
  const counters: CounterSnapshot[] = [];
  for (let calls = 1; ; calls++) {
    const batch = take.next(T0 + 1, budget);
    expect(batch.counters.length).toBeLessThanOrEqual(budget);
    counters.push(...batch.counters);
    if (!batch.more) return { counters, calls };
  }
}

describe("taking counters by ranges", () => {
  it("takes exactly the counters the old predicate scan takes, in slices, with and without the index", () => {
    for (let seed = 1; seed <= 25; seed++) {
      const r = rng(seed);
      const ranges = randomRanges(r);
      const n = 200 + Math.floor(r() * 800);
      const budget = 1 + Math.floor(r() * 100);
      const old = new Engine();
      const keys = fill(old, n, rng(seed * 7));
      const expected = old.takeCounters((shard) => inside(ranges, fnv(shard)), T0 + 1);
      for (const pointOf of [fnv, undefined]) {
        const e = new Engine({ pointOf });
        fill(e, n, rng(seed * 7));
        const { counters } = takeAll(e, ranges, budget);
        const byKey = (a: CounterSnapshot, b: CounterSnapshot) => a.key.localeCompare(b.key);
        expect(counters.sort(byKey)).toEqual([...expected].sort(byKey));
        // Each exactly once, and what is left is what the ranges do not hold.
        expect(new Set(counters.map((c) => c.key)).size).toBe(counters.length);
        expect(e.size).toBe(keys.length - expected.length);
        expect(takeAll(e, ranges, budget).counters).toEqual([]);
      }
    }
  });

  it("with the index, visits only the buckets the ranges overlap", () => {
    // Points chosen by the test: 10 counters in [0, 2^20) (bucket 0), 10,000 far away.
    const points = new Map<string, number>();
    const pointOf = (shard: string) => points.get(shard)!;
    const e = new Engine({ pointOf });
    for (let i = 0; i < 10; i++) {
      points.set(`near${i}`, i * 1000);
      e.check(`near${i}`, tb, 1, T0);
    }
    for (let i = 0; i < 10_000; i++) {
      points.set(`far${i}`, 2 ** 31 + i);
      e.check(`far${i}`, tb, 1, T0);
    }
    // A budget just over the bucket's 10 counters finishes the take in one call.
    const batch = e.takeRanges([{ start: 0, end: 5000 }], pointOf).next(T0 + 1, 11);
    expect(batch.more).toBe(false);
    expect(batch.counters.map((c) => c.key).sort()).toEqual(["near0", "near1", "near2", "near3", "near4"]);
    // Without the index the same take walks everything.
    const scan = new Engine();
    for (const k of points.keys()) scan.check(k, tb, 1, T0);
    expect(takeAll(scan, [{ start: 0, end: 5000 }], 10).calls).toBeGreaterThan(1000);
  });

  it("keeps the index in step with sweeps, replacements and handed-over counters", () => {
    const e = new Engine({ pointOf: fnv });
    const fw = limitDefaults({ algorithm: "fixed_window", limit: 5, windowMs: 1000 });
    e.check("a", fw, 1, T0);
    e.check("b", tb, 1, T0);
    e.counterFor("b", fw, T0); // replaced: another algorithm
    e.sweep(T0 + 10_000); // both windows over: dropped
    expect(e.size).toBe(0);
    const all = [{ start: 0, end: 2 ** 32 }];
    expect(takeAll(e, all, 5).counters).toEqual([]);
    e.check("c", tb, 1, T0);
    const snaps = e.takeRanges(all, fnv).next(T0, 100).counters;
    expect(snaps.map((s) => s.key)).toEqual(["c"]);
    const receiver = new Engine({ pointOf: fnv });
    receiver.putCounters(snaps, T0);
    receiver.putCounters(snaps, T0); // a late duplicate replaces or keeps, never files twice
    expect(takeAll(receiver, all, 1).counters.map((s) => s.key)).toEqual(["c"]);
    expect(receiver.size).toBe(0);
  });
});

describe("the dedup sweep in slices", () => {
  it("visits at most `budget` clients per slice and in the end forgets every stale one", () => {
    const d = new ReportDedup();
    for (let i = 0; i < 1000; i++) d.accept(`gw${i}`, 1, i % 2 === 0 ? 10 : 100);
    let removed = 0;
    let slices = 0;
    for (;;) {
      const s = d.sweepSlice(50, 64);
      expect(s.visited).toBeLessThanOrEqual(64);
      expect(s.removed).toBeLessThanOrEqual(64);
      removed += s.removed;
      slices++;
      if (s.done) break;
    }
    expect(removed).toBe(500);
    expect(slices).toBeGreaterThanOrEqual(1000 / 64);
    expect(d.size).toBe(500);
  });

  it("the engine's sweeper sweeps the dedup table within its budget", () => {
    const e = new Engine({ clientTtlMs: 1000 });
    for (let i = 0; i < 500; i++) e.acceptReport(`gw${i}`, 1, T0);
    let calls = 0;
    while (e.clients > 0 && calls < 1000) {
      e.sweep(T0 + 5000, 50);
      calls++;
    }
    expect(e.clients).toBe(0);
    expect(calls).toBeGreaterThanOrEqual(10);
  });
});
