import { describe, expect, it } from "vitest";
import { type ClientShare, ClientTable } from "../../src/core/clients.js";
import { DEFAULT_MAX_CLIENTS_PER_KEY, Engine, limitDefaults } from "../../src/core/index.js";

const T0 = 1_700_000_040_000;

describe("a key's client table is bounded (issue 11, hole 5)", () => {
  it("clients past maxClients are folded into one aggregate, not tracked one by one", () => {
    const table = new ClientTable(4);
    for (let i = 0; i < 100; i++) {
      const s = table.upsert(`gw${i}`, T0);
      table.observe(s, 1, 100);
    }
    expect(table.tracked).toBe(4);
    // The aggregate stands for the other 96 (estimated from their reports), so the key's demand
    // still counts them all, within the estimate's ramp-up.
    expect(table.sumDemand).toBeGreaterThan(4);
    expect(table.sumDemand).toBeLessThanOrEqual(100 + 1e-9);
  });

  it("over the capacity, the fair shares of tracked and folded clients together stay within it", () => {
    const table = new ClientTable(4);
    const now = T0;
    const shares = [];
    // Reports over a few seconds so the aggregate's estimate has settled.
    for (let t = 0; t < 5000; t += 100) {
      for (let i = 0; i < 50; i++) {
        const s = table.upsert(`gw${i}`, now + t);
        table.observe(s, 2, 100);
      }
    }
    const capacity = 20;
    for (let i = 0; i < 50; i++)
      shares.push(table.fairShare(table.upsert(`gw${i}`, now + 5000), capacity, now + 5000));
    const total = shares.reduce((a, b) => a + b, 0);
    expect(total).toBeLessThanOrEqual(capacity * 1.05);
    for (const s of shares) expect(s).toBeGreaterThan(0);
  });

  it("an engine key reported by more client ids than the bound counts every unit, tracks at most the bound", () => {
    const e = new Engine();
    const l = limitDefaults({ algorithm: "fixed_window", limit: 1e9, windowMs: 60_000 });
    const n = DEFAULT_MAX_CLIENTS_PER_KEY + 500;
    for (let i = 0; i < n; i++) {
      e.report("k", l, `gw${i}`, { admitted: 2, rejected: 0, held: 0, windowAdmitted: 0 }, true, 100, T0);
    }
    const c = e.counterFor("k", l, T0);
    expect(c.clients!.tracked).toBe(DEFAULT_MAX_CLIENTS_PER_KEY);
    expect(e.peek("k", l, T0).remaining).toBe(1e9 - 2 * n);
  });
});

describe("a pruned gateway's entry is reused, not reallocated (issue 16, GC at 1M counters)", () => {
  it("the next gateway of a key whose sole gateway went stale gets the same object, as new", () => {
    const table = new ClientTable();
    const first = table.upsert("gw-a", T0);
    table.observe(first, 5, 100);
    table.offered(500, T0);
    // Every field set away from its initial value, so a field that reset() misses shows.
    for (const k of Object.keys(first) as (keyof ClientShare)[]) {
      const v = first[k];
      (first as unknown as Record<string, unknown>)[k] = typeof v === "boolean" ? !v : 42;
    }
    table.prune(T0 + 10_000, 5_000);
    expect(table.tracked).toBe(0);
    const next = table.upsert("gw-b", T0 + 10_000);
    expect(next).toBe(first);
    expect({ ...next }).toEqual({ ...new ClientTable().upsert("gw-b", T0 + 10_000) });
    expect(table.sumDemand).toBe(0);
  });
});

describe("a key's offered rate", () => {
  it("decays by exp(-dt/1000) and exp(-dt/250) (derived from one exp), the peak by exp(-dt/5000)", () => {
    for (const dt of [1, 7, 100, 999, 4321, 60_000]) {
      const table = new ClientTable();
      table.offered(400, T0);
      table.offered(40, T0 + dt);
      const rate = (400 * Math.exp(-dt / 1000)) / 1000 + 40 / 1000;
      const fast = (400 * Math.exp(-dt / 250)) / 250 + 40 / 250;
      const got = table.offeredRate(T0 + dt);
      expect(got / Math.max(rate, fast), `dt ${dt}`).toBeCloseTo(1, 12);
      expect(table.peakReport(T0 + dt) / Math.max(40, 400 * Math.exp(-dt / 5000)), `dt ${dt}`).toBeCloseTo(
        1,
        12,
      );
    }
  });
});
