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
  it("holds no more than 2^16 counters in any one Map (a growing Map rehashes all its entries in one go)", () => {
    const t = new CounterTable();
    const n = 300_000;
    for (let i = 0; i < n; i++) put(t, `bench/k=${i}`);
    expect(t.size).toBe(n);
    // A map is split in two past 2^16 counters (a rehash of that many takes a few milliseconds).
    expect(Math.max(...internalMaps(t).map((m) => m.size))).toBeLessThanOrEqual(2 ** 16);
    expect([...t].length).toBe(n);
    for (let i = 0; i < n; i += 997) expect(t.get(`bench/k=${i}`)?.shard).toBe(`bench/k=${i}`);
  });

  it("spreads keys that differ only in the middle, or share a long suffix", () => {
    const t = new CounterTable();
    const n = 150_000;
    for (let i = 0; i < n; i++) put(t, `tenant=${i}|route=/api/v1/things/with/a/long/constant/path|minute`);
    expect(Math.max(...internalMaps(t).map((m) => m.size))).toBeLessThanOrEqual(2 ** 16);
    expect(t.size).toBe(n);
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

  it("a walk under way when maps split visits every counter there at its start, and drops only what it visits", () => {
    const t = new CounterTable();
    const live = new Map<string, Counter>();
    for (let i = 0; i < 60_000; i++) live.set(`a${i}`, put(t, `a${i}`));
    const seen = new Set<string>();
    let added = 0;
    for (const [key, c] of t.entries()) {
      if (c.removed || t.get(key) !== c) throw new Error(`visited ${key}, not the table's`);
      seen.add(key);
      // New counters meanwhile force splits (past 2^16 in a map), some of the map being walked.
      if (key.startsWith("a")) for (let k = 0; k < 3; k++) put(t, `b${added++}`);
      if (key.startsWith("a") && Number(key.slice(1)) % 3 === 0) t.drop(key, c);
    }
    for (const key of live.keys()) expect(seen.has(key)).toBe(true);
    expect(t.size).toBe(60_000 - 20_000 + added);
    expect(Math.max(...internalMaps(t).map((m) => m.size))).toBeLessThanOrEqual(2 ** 16);
    for (const [key, c] of live) expect(t.get(key)).toBe(Number(key.slice(1)) % 3 === 0 ? undefined : c);
  });
});
