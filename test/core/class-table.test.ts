import { describe, expect, it } from "vitest";
import { ClassTable } from "../../src/core/class-table.js";
import { limitDefaults } from "../../src/core/limit.js";
import { PRIORITY_RANK } from "../../src/core/priority.js";

const { low, normal, critical } = PRIORITY_RANK;

/** `perMs` units per ms offered by class `rank` (one tenant, one gateway), measured at `now`. */
function offer(t: ClassTable, rank: number, perMs: number, now: number): void {
  const tenant = t.tenants(rank).upsert("", 1);
  const g = tenant.gateways.upsert("gw", now);
  tenant.gateways.observe(g, perMs, 100);
  tenant.gateways.offered(perMs * 100, now);
}

describe("ClassTable: batched mode's division by priority class", () => {
  const l = limitDefaults({ algorithm: "token_bucket", limit: 1000, windowMs: 1000 });

  it("serves the classes highest first: critical its demand, low what is left", () => {
    const t = new ClassTable();
    offer(t, critical, 0.3, 0);
    offer(t, low, 2, 0);
    const now = 2000; // the measured rates settle over a second
    for (let i = 0; i < 40; i++) {
      offer(t, critical, 0.3, i * 50);
      offer(t, low, 2, i * 50);
    }
    expect(t.within(critical, 1, l, now)).toBe(true);
    expect(t.within(low, 1, l, now)).toBe(false);
    expect(t.part(critical, 1, l, now) + t.part(low, 1, l, now)).toBeCloseTo(1, 5);
    expect(t.above(low, 1, l, now)).toBeGreaterThan(0.2);
  });

  it("a reserve above a class caps its part and its spending, with or without traffic above", () => {
    const r = limitDefaults({
      algorithm: "token_bucket",
      limit: 1000,
      windowMs: 1000,
      reserve: { critical: 0.2 },
    });
    const t = new ClassTable();
    for (let i = 0; i < 40; i++) offer(t, low, 2, i * 50);
    expect(t.part(low, 1, r, 2000)).toBeCloseTo(0.8, 5);
    expect(t.reservedAbove(low, r)).toBeCloseTo(0.2);
    expect(t.reservedAbove(critical, r)).toBe(0);
    // The shadow of the cap: 800 units of room (the capped bucket starts full), 0.8/ms back.
    expect(t.capOf(low, r, 0)).toEqual({ avail: 800, refill: 0.8 });
    t.charge(low, 700, r, 0);
    t.charge(normal, 100, r, 0);
    expect(t.capOf(low, r, 0)!.avail).toBeCloseTo(100);
    // Normal's use counts against low's cap (both below the reserve); critical's counts against none.
    t.charge(critical, 500, r, 0);
    expect(t.capOf(low, r, 0)!.avail).toBeCloseTo(100);
    expect(t.capOf(critical, r, 0)).toBeUndefined();
    expect(t.capOf(low, r, 250)!.avail).toBeCloseTo(300);
  });
});
