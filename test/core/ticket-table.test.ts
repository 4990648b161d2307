import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { limitDefaults } from "../../src/core/limit.js";
import { type TicketCharge, TicketTable } from "../../src/core/ticket-table.js";

function ids() {
  let n = 0;
  return () => `t${++n}`;
}

const fw = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 60_000 });
const charge = (estimate: number): TicketCharge => ({
  key: "k",
  shard: "k",
  limit: fw,
  estimate,
  windowAt: 0,
  item: 0,
});

describe("TicketTable", () => {
  it("opens tickets under unique ids, up to its bound, and says so past it", () => {
    const clock = new ManualClock(0);
    const table = new TicketTable(2, ids());
    const a = table.open("k", 1, [charge(5)], 1000, clock.elapsed());
    const b = table.open("k", 1, [charge(5)], 1000, clock.elapsed());
    expect(a.id).not.toBe(b.id);
    expect(table.hasRoom(clock.elapsed())).toBe(false);
    expect(() => table.open("k", 1, [charge(5)], 1000, clock.elapsed())).toThrow(/maximum of 2 open tickets/);
    expect(table.size).toBe(2);
  });

  it("forgets a ticket at its timeout, settled or not, and makes room for new ones", () => {
    const clock = new ManualClock(0);
    const table = new TicketTable(1, ids());
    const a = table.open("k", 1, [charge(5)], 1000, clock.elapsed());
    clock.advance(999);
    expect(table.get(a.id, clock.elapsed())).toBe(a);
    clock.advance(1);
    expect(table.get(a.id, clock.elapsed())).toBeUndefined();
    const b = table.open("k", 1, [charge(5)], 1000, clock.elapsed());
    clock.advance(2000);
    // Full of an expired ticket: hasRoom sweeps it away.
    expect(table.hasRoom(clock.elapsed())).toBe(true);
    expect(table.get(b.id, clock.elapsed())).toBeUndefined();
    expect(table.size).toBe(0);
  });

  it("never hands out an id twice, even from a generator that repeats", () => {
    const seq = ["x", "x", "y"];
    const table = new TicketTable(10, () => seq.shift()!);
    expect(table.open("k", 1, [], 1000, 0).id).toBe("x");
    expect(table.open("k", 1, [], 1000, 0).id).toBe("y");
  });

  it("keeps a settled ticket only a minute more (to answer a repeat), however long its timeout", () => {
    const table = new TicketTable(10, ids());
    const t = table.open("k", 1, [], 600_000, 0);
    table.settled(t, { remaining: 1, limit: 2, resetMs: 3 }, 1000);
    expect(table.get(t.id, 60_999)?.answer).toEqual({ remaining: 1, limit: 2, resetMs: 3 });
    expect(table.get(t.id, 61_000)).toBeUndefined();
  });

  it("a full table is swept whole at most once a second", () => {
    const table = new TicketTable(1, ids());
    table.open("k", 1, [], 10, 0);
    expect(table.hasRoom(5)).toBe(false); // swept: nothing expired yet
    expect(table.hasRoom(500)).toBe(false); // expired, but swept 495 ms ago
    expect(table.hasRoom(1005)).toBe(true);
  });

  it("sweeps expired tickets a slice at a time", () => {
    const table = new TicketTable(100, ids());
    for (let i = 0; i < 10; i++) table.open("k", 1, [], i < 5 ? 10 : 1000, 0);
    expect(table.sweep(500, 4)).toBe(4);
    expect(table.sweep(500, 100)).toBe(1);
    expect(table.size).toBe(5);
  });
});

describe("Engine.settleCharge: the refund rule", () => {
  it("refunds within the window the estimate was charged in, never below zero", () => {
    const e = new Engine();
    const now = 60_000;
    e.check("k", fw, 40, now);
    const at = e.windowOf("k", fw);
    expect(at).toBe(60_000);
    expect(e.settleCharge("k", fw, -30, at, now + 1).remaining).toBe(90);
    // A refund larger than what is counted stops at an empty window.
    expect(e.settleCharge("k", fw, -500, at, now + 2).remaining).toBe(100);
  });

  it("a refund for a window that has ended adds nothing to the current one; an extra charge counts now", () => {
    const e = new Engine();
    e.check("k", fw, 100, 60_000);
    const at = e.windowOf("k", fw);
    e.check("k", fw, 50, 120_000); // the next window
    expect(e.settleCharge("k", fw, -90, at, 120_001).remaining).toBe(50);
    expect(e.settleCharge("k", fw, 10, at, 120_002).remaining).toBe(40);
  });

  it("sliding window: a refund for the previous window lowers that window's weight, older ones nothing", () => {
    const sw = limitDefaults({ algorithm: "sliding_window", limit: 100, windowMs: 60_000 });
    const e = new Engine();
    e.check("k", sw, 100, 60_000);
    const at = e.windowOf("k", sw);
    // Half-way through the next window the previous one weighs half: 50 of 100 used.
    expect(e.peek("k", sw, 150_000).remaining).toBe(50);
    e.settleCharge("k", sw, -60, at, 150_000);
    expect(e.peek("k", sw, 150_000).remaining).toBe(80);
    e.settleCharge("k", sw, -40, at, 190_000); // two windows on: nothing
    expect(e.peek("k", sw, 190_000).remaining).toBe(100);
  });

  it("token bucket: a refund is taken back up to the burst, never past it", () => {
    const tb = limitDefaults({ algorithm: "token_bucket", limit: 100, windowMs: 60_000 });
    const e = new Engine();
    e.check("k", tb, 80, 0);
    expect(e.settleCharge("k", tb, -30, 0, 0).remaining).toBe(50);
    expect(e.settleCharge("k", tb, -500, 0, 0).remaining).toBe(100);
  });
});

describe("Engine: refunds in batched reports", () => {
  const entry = (admitted: number, refunded = 0) => ({
    admitted,
    rejected: 0,
    held: 0,
    windowAdmitted: 0,
    refunded,
  });

  it("takes back at most what the reporting gateway put into the current window", () => {
    const e = new Engine();
    const now = 60_000;
    e.report("k", fw, "g1", entry(30), true, 100, now);
    e.report("k", fw, "g2", entry(50), true, 100, now);
    // g1 claims more back than it ever put in: g2's 50 stay counted.
    e.report("k", fw, "g1", entry(0, 1000), true, 100, now + 100);
    expect(e.peek("k", fw, now + 100).remaining).toBe(50);
    // A refund in the next window finds nothing of g2's there to take back.
    e.report("k", fw, "g2", entry(0, 50), true, 100, 120_000);
    expect(e.peek("k", fw, 120_000).remaining).toBe(100);
    e.report("k", fw, "g2", entry(10), true, 100, 120_100);
    e.report("k", fw, "g2", entry(0, 50), true, 100, 120_200);
    expect(e.peek("k", fw, 120_200).remaining).toBe(100);
  });

  it("a duplicate report takes nothing back", () => {
    const e = new Engine();
    e.report("k", fw, "g1", entry(40), true, 100, 60_000);
    e.report("k", fw, "g1", entry(0, 30), true, 100, 60_100);
    e.report("k", fw, "g1", entry(0, 30), false, 100, 60_200);
    expect(e.peek("k", fw, 60_200).remaining).toBe(90);
  });

  it("a token bucket takes a refund up to its burst", () => {
    const tb = limitDefaults({ algorithm: "token_bucket", limit: 100, windowMs: 60_000 });
    const e = new Engine();
    e.report("k", tb, "g1", entry(80), true, 100, 0);
    e.report("k", tb, "g1", entry(0, 500), true, 100, 0);
    expect(e.peek("k", tb, 0).remaining).toBe(100);
  });
});
