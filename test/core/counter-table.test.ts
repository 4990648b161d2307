import { describe, expect, it } from "vitest";
import { Counter } from "../../src/core/counter.js";
import { CounterTable } from "../../src/core/counter-table.js";

/** Every Map the table holds, directly or in an array field (whatever its internal layout). */
function internalMaps(t: CounterTable): Map<unknown, unknown>[] {
  const out: Map<unknown, unknown>[] = [];
  for (const v of Object.values(t)) {
    if (v instanceof Map) out.push(v);
    else if (Array.isArray(v)) for (const x of v) if (x instanceof Map) out.push(x);
  }
  return out;
}

function put(t: CounterTable, key: string): Counter {
  const c = new Counter("token_bucket", key);
  t.install(key, c, t.get(key));
  return c;
}

describe("CounterTable", () => {
  it("holds no more than a small share of its counters in any one Map (a growing Map rehashes all its entries in one go)", () => {
    const t = new CounterTable();
    const n = 200_000;
    for (let i = 0; i < n; i++) put(t, `bench/k=${i}`);
    expect(t.size).toBe(n);
    const largest = Math.max(...internalMaps(t).map((m) => m.size));
    // 5M counters would be ~100k per map at this share.
    expect(largest).toBeLessThanOrEqual(n / 50);
  });

  it("spreads keys that differ only in the middle, or share a long suffix", () => {
    const t = new CounterTable();
    const n = 50_000;
    for (let i = 0; i < n; i++) put(t, `tenant=${i}|route=/api/v1/things/with/a/long/constant/path|minute`);
    expect(Math.max(...internalMaps(t).map((m) => m.size))).toBeLessThanOrEqual(n / 50);
  });

  it("visits every counter once, keeps size through replace and drop, and allows drops while walking", () => {
    const t = new CounterTable();
    const live = new Map<string, Counter>();
    for (let i = 0; i < 5_000; i++) live.set(`k${i}`, put(t, `k${i}`));
    // Replace some: the size stays, the old counter is marked removed, the new one is found.
    for (let i = 0; i < 5_000; i += 7) {
      const old = live.get(`k${i}`)!;
      const c = put(t, `k${i}`);
      expect(old.removed).toBe(true);
      live.set(`k${i}`, c);
    }
    expect(t.size).toBe(5_000);
    const seen = new Set<string>();
    for (const [key, c] of t) {
      expect(seen.has(key)).toBe(false);
      seen.add(key);
      expect(c).toBe(live.get(key));
    }
    expect(seen.size).toBe(5_000);
    // A sweeper-style walk dropping every other counter as it goes.
    let visited = 0;
    for (const [key, c] of t.entries()) {
      visited++;
      if (Number(key.slice(1)) % 2 === 0) t.drop(key, c);
    }
    expect(visited).toBe(5_000);
    expect(t.size).toBe(2_500);
    for (const [key] of live) expect(t.get(key) === undefined).toBe(Number(key.slice(1)) % 2 === 0);
    expect([...t].length).toBe(2_500);
  });
});
