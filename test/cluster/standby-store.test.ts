import { describe, expect, it } from "vitest";
import { StandbyCopies } from "../../src/cluster/standby.js";
import { StandbyStore } from "../../src/cluster/standby-store.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine, limitDefaults } from "../../src/core/index.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import type { StandbyResponse } from "../../src/protocol/messages.js";
import { snapshot } from "./handoff-fakes.js";

const log = { info() {}, warn() {}, error() {}, debug() {} };
const ALL = [{ start: 0, end: 2 ** 32 }];
const copy = (key: string, expiresInMs = 60_000): CounterSnapshot => ({ ...snapshot(key), expiresInMs });

describe("StandbyStore", () => {
  it("keeps the latest copy of each counter per member", () => {
    const store = new StandbyStore(new ManualClock(), 100);
    store.put("s1", [copy("a"), copy("b")]);
    store.put("s1", [{ ...copy("a"), x: 9 }]);
    store.put("s2", [copy("a")]);
    expect(store.size).toBe(3);
    const s1 = store.copies("s1", ALL, keyPoint);
    expect(s1.map((c) => [c.key, c.x]).sort()).toEqual([
      ["a", 9],
      ["b", 5],
    ]);
    expect(store.copies("s3", ALL, keyPoint)).toEqual([]);
  });

  it("answers only the copies in the ranges asked for", () => {
    const store = new StandbyStore(new ManualClock(), 100);
    const keys = Array.from({ length: 20 }, (_, i) => `k${i}`);
    store.put(
      "s1",
      keys.map((k) => copy(k)),
    );
    const half = [{ start: 0, end: 2 ** 31 }];
    const got = store.copies("s1", half, keyPoint).map((c) => c.key);
    expect(got.sort()).toEqual(keys.filter((k) => keyPoint(k) < 2 ** 31).sort());
  });

  it("ages a copy by its time in the store (monotonic clock), so its window stays where it was", () => {
    const clock = new ManualClock();
    const store = new StandbyStore(clock, 100);
    store.put("s1", [copy("a")]);
    clock.advance(700);
    const [c] = store.copies("s1", ALL, keyPoint);
    expect(c).toMatchObject({ tRelMs: -10 - 700, expiresInMs: 60_000 - 700 });
    expect(c!.clients[0]!.seenMsAgo).toBe(10 + 700);
    // Restored on an engine, the copy's window is the one it was counted in.
    const engine = new Engine();
    const fw = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 60_000 });
    const owner = new Engine();
    const T0 = 1_700_000_000_000 + 1000;
    owner.check("w", fw, 30, T0);
    store.put(
      "s1",
      owner.takeCounters(() => true, T0 + 100),
    );
    clock.advance(500);
    engine.putCounters(
      store.copies("s1", ALL, keyPoint).filter((x) => x.key === "w"),
      T0 + 600,
      "standby",
    );
    expect(engine.peek("w", fw, T0 + 600)).toMatchObject({
      remaining: 70,
      resetAt: owner.peek("w", fw, T0).resetAt,
    });
  });

  it("drops a copy once its counter would have expired at its member (lazily)", () => {
    const clock = new ManualClock();
    const store = new StandbyStore(clock, 100);
    store.put("s1", [copy("short", 1000), copy("long", 60_000)]);
    clock.advance(1000);
    expect(store.copies("s1", ALL, keyPoint).map((c) => c.key)).toEqual(["long"]);
    expect(store.size).toBe(1);
    // Puts sweep expired copies of other members too, a bounded number each time.
    store.put("s2", [copy("x", 500)]);
    clock.advance(60_000);
    store.put("s3", [copy("y")]);
    expect(store.size).toBe(1);
  });

  it("is bounded: a put past the bound stores nothing and says why", () => {
    const clock = new ManualClock();
    const store = new StandbyStore(clock, 3);
    expect(store.put("s1", [copy("a"), copy("b")])).toEqual({ stored: 2 });
    const r = store.put("s2", [copy("c"), copy("d")]);
    expect(r).toEqual({ refused: expect.stringMatching(/at their bound of 3 \(2 held, 2 new/) });
    expect(store.size).toBe(2);
    expect(store.copies("s2", ALL, keyPoint)).toEqual([]);
    // Replacing copies held takes no room.
    expect(store.put("s1", [copy("a"), copy("b")])).toEqual({ stored: 2 });
    // Expired copies make room again.
    store.put("s1", [copy("a", 10), copy("b", 10)]);
    clock.advance(10);
    expect(store.put("s2", [copy("c"), copy("d")])).toEqual({ stored: 2 });
  });

  it("drop forgets a member's copies", () => {
    const store = new StandbyStore(new ManualClock(), 100);
    store.put("s1", [copy("a"), copy("b")]);
    store.put("s2", [copy("c")]);
    expect(store.drop("s1")).toBe(2);
    expect(store.size).toBe(1);
    expect(store.copies("s1", ALL, keyPoint)).toEqual([]);
  });
});

const members = (...ids: string[]): Member[] => ids.map((id, i) => ({ id, address: `10.0.0.${i}:8081` }));

function copiesOn(self: string, ids: string[], opts: { max?: number; maxMessageBytes?: number } = {}) {
  const a = new Assignment(7, members(...ids), new Uint32Array([0]), new Uint16Array([0]));
  const store = new StandbyStore(new ManualClock(), opts.max ?? 1000);
  const asked: string[] = [];
  const answers = new Map<string, (offset: number) => StandbyResponse>();
  const standby = new StandbyCopies({
    selfId: self,
    ownership: { current: () => a, generation: () => 7 },
    store,
    peer: (address) => ({
      standby: async (req) => {
        asked.push(address);
        const answer = answers.get(address);
        if (!answer) throw new Error("14 UNAVAILABLE");
        return answer(req.offset ?? 0);
      },
    }),
    log,
    maxMessageBytes: opts.maxMessageBytes ?? 1 << 20,
    maxCounters: 1_000_000,
  });
  return { standby, store, a, asked, answers };
}

describe("StandbyCopies: what a buddy accepts", () => {
  const req = (from: string, counters = [copy("a")]) => ({ from, generation: 7, counters, drained: false });

  it("stores copies from the member whose buddy this server is", () => {
    const { standby, store } = copiesOn("s2", ["s1", "s2", "s3"]);
    expect(standby.replicate(req("s1"))).toEqual({ accepted: 1, generation: 7 });
    expect(store.size).toBe(1);
  });

  it("refuses a member whose buddy is another server, naming it, and stores nothing", () => {
    const { standby, store } = copiesOn("s2", ["s1", "s2", "s3"]);
    const r = standby.replicate(req("s2")); // s2's buddy is s3
    expect(r.error?.message).toMatch(/not s2's buddy in generation 7 \(s3 is\)/);
    expect(standby.replicate(req("s3")).error?.message).toMatch(/\(s1 is\)/);
    expect(store.size).toBe(0);
  });

  it("refuses a sender that is not a member (a forged source)", () => {
    const { standby, store } = copiesOn("s2", ["s1", "s2", "s3"]);
    const r = standby.replicate(req("s0"));
    expect(r).toMatchObject({ accepted: 0, error: { message: expect.stringMatching(/s0 is not a member/) } });
    expect(store.size).toBe(0);
  });

  it("past its bound: COUNTERS_EXHAUSTED, nothing stored", () => {
    const { standby, store } = copiesOn("s2", ["s1", "s2"], { max: 1 });
    const r = standby.replicate(req("s1", [copy("a"), copy("b")]));
    expect(r.error).toMatchObject({ code: 4, message: expect.stringMatching(/bound of 1/) });
    expect(store.size).toBe(0);
  });

  it("a member that drained: its copies are dropped", () => {
    const { standby, store } = copiesOn("s2", ["s1", "s2"]);
    standby.replicate(req("s1"));
    expect(standby.replicate({ ...req("s1", []), drained: true }).error).toBeUndefined();
    expect(store.size).toBe(0);
  });
});

describe("StandbyCopies: a takeover", () => {
  it("takes the copies from the local store when this server is the dead member's buddy", async () => {
    const { standby, store, a, asked } = copiesOn("s2", ["s1", "s2", "s3"]);
    store.put("s1", [copy("a")]);
    const got = await standby.fetch(a.members[0]!, [a.members], 8, [{ start: 0, end: 2 ** 32 }]);
    expect(got.buddy).toBe("s2");
    expect(got.copies.map((c) => c.key)).toEqual(["a"]);
    expect(asked).toEqual([]);
  });

  it("asks the buddy, page by page, when it is another server", async () => {
    const buddy = copiesOn("s2", ["s1", "s2", "s3"], { maxMessageBytes: 600 });
    const keys = Array.from({ length: 30 }, (_, i) => `k${i}`);
    buddy.store.put(
      "s1",
      keys.map((k) => copy(k)),
    );
    const taker = copiesOn("s3", ["s1", "s2", "s3"]);
    taker.answers.set("10.0.0.1:8081", (offset) =>
      buddy.standby.standby({ of: "s1", generation: 8, ranges: [{ start: 0, end: 2 ** 32 }], offset }),
    );
    const got = await taker.standby.fetch(taker.a.members[0]!, [taker.a.members], 8, [
      { start: 0, end: 2 ** 32 },
    ]);
    expect(got.buddy).toBe("s2");
    expect(got.copies.map((c) => c.key).sort()).toEqual(keys.sort());
    expect(taker.asked.length).toBeGreaterThan(3); // several pages
  });

  it("a member that joined between the dead one and its buddy: the old buddy's copies are taken too", async () => {
    // s1 dies; s15 joined just before (its id sorts between s1 and s2), so in the newest
    // assignment s15 is s1's buddy but holds only one copy s1 sent it after the switch. s2, s1's
    // buddy before, holds the rest. Asking only the newest buddy lost "b" and "c".
    const oldBuddy = copiesOn("s2", ["s1", "s2", "s3"]);
    oldBuddy.store.put("s1", [{ ...copy("a"), x: 5 }, copy("b"), copy("c")]);
    const newBuddy = copiesOn("s15", ["s1", "s15", "s2", "s3"]);
    newBuddy.store.put("s1", [{ ...copy("a"), x: 9 }]);
    const taker = copiesOn("s3", ["s1", "s15", "s2", "s3"]);
    const serve = (s: ReturnType<typeof copiesOn>) => (offset: number) =>
      s.standby.standby({ of: "s1", generation: 8, ranges: [{ start: 0, end: 2 ** 32 }], offset });
    taker.answers.set("10.0.0.1:8081", serve(newBuddy)); // s15 in the newest list
    taker.answers.set("10.0.0.2:8081", serve(oldBuddy)); // s2 (index 2 there)
    const newest = members("s1", "s15", "s2", "s3");
    const before = newest.filter((m) => m.id !== "s15"); // the assignment before s15 joined
    const got = await taker.standby.fetch(newest[0]!, [newest, before], 8, [{ start: 0, end: 2 ** 32 }]);
    expect(got.buddy).toBe("s15,s2");
    expect(got.copies.map((c) => c.key).sort()).toEqual(["a", "b", "c"]);
    // The newest buddy's copy of "a" wins: it was sent last.
    expect(got.copies.find((c) => c.key === "a")?.x).toBe(9);
  });

  it("one buddy not answering: the other's copies are still taken", async () => {
    const oldBuddy = copiesOn("s2", ["s1", "s2", "s3"]);
    oldBuddy.store.put("s1", [copy("b")]);
    const taker = copiesOn("s3", ["s1", "s15", "s2", "s3"]);
    taker.answers.set("10.0.0.2:8081", (offset) =>
      oldBuddy.standby.standby({ of: "s1", generation: 8, ranges: [{ start: 0, end: 2 ** 32 }], offset }),
    );
    const newest = members("s1", "s15", "s2", "s3");
    const got = await taker.standby.fetch(newest[0]!, [newest, newest.filter((m) => m.id !== "s15")], 8, [
      { start: 0, end: 2 ** 32 },
    ]);
    expect(got).toMatchObject({ buddy: "s2" });
    expect(got.copies.map((c) => c.key)).toEqual(["b"]);
  });

  it("fails with the reason when the buddy does not answer (two faults)", async () => {
    const { standby, a } = copiesOn("s3", ["s1", "s2", "s3"]);
    await expect(standby.fetch(a.members[0]!, [a.members], 8, [{ start: 0, end: 2 ** 32 }])).rejects.toThrow(
      /UNAVAILABLE/,
    );
    await expect(standby.fetch(a.members[0]!, [], 8, [{ start: 0, end: 2 ** 32 }])).rejects.toThrow(
      /no buddy known for s1/,
    );
  });
});
