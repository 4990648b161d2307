import { describe, expect, it } from "vitest";
import { Engine, limitDefaults } from "../../src/core/index.js";

const T0 = 1_700_000_000_000;
const fw = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 60_000 });
const tb = limitDefaults({ algorithm: "token_bucket", limit: 10, windowMs: 1000, burst: 20 });
const cc = limitDefaults({ algorithm: "concurrency", limit: 5, leaseTimeoutMs: 10_000 });
const entry = (admitted: number, windowAdmitted = 0) => ({ admitted, rejected: 0, held: 0, windowAdmitted });
const keys = (e: Engine, now = T0) =>
  e
    .takeChanged(1000, now)
    .map((s) => s.key)
    .sort();

describe("engine: counters changed since last taken (standby copies)", () => {
  it("every call that changes a counter marks it; taking forgets it", () => {
    const e = new Engine({ trackChanges: true });
    e.check("a", fw, 1, T0);
    e.checkMany([{ key: "b", limit: fw, cost: 1 }], T0, "envoy");
    e.adjust("c", fw, 3, T0);
    e.acquire("d", cc, "l1", 1, T0);
    e.report("f", fw, "gw", entry(2), true, 100, T0);
    expect(keys(e)).toEqual(["a", "b", "c", "d", "f"]);
    expect(keys(e)).toEqual([]);
    expect(e.renew("d", cc, "l1", T0 + 1)).toBe(true);
    expect(keys(e)).toEqual(["d"]);
    expect(e.release("d", "l1", T0 + 2)).toBe(true);
    expect(keys(e)).toEqual(["d"]);
  });

  it("reads and refusals change nothing: not marked", () => {
    const e = new Engine({ trackChanges: true });
    e.check("a", fw, 100, T0);
    keys(e);
    e.peek("a", fw, T0);
    expect(e.check("a", fw, 1, T0).allowed).toBe(false);
    expect(e.renew("a", cc, "none", T0)).toBe(false);
    expect(e.release("a", "none", T0)).toBe(false);
    e.report("a", fw, "gw", entry(0), false, 100, T0); // a duplicate report: re-read only
    expect(keys(e)).toEqual([]);
  });

  it("a key changed many times is taken once, with its latest state", () => {
    const e = new Engine({ trackChanges: true });
    for (let i = 0; i < 5; i++) e.check("a", fw, 1, T0 + i);
    const taken = e.takeChanged(10, T0 + 10);
    expect(taken.map((s) => s.key)).toEqual(["a"]);
    expect(taken[0]!.x).toBe(5);
  });

  it("takes at most `max`, oldest change first, and the rest next time", () => {
    const e = new Engine({ trackChanges: true });
    for (let i = 0; i < 10; i++) e.check(`k${i}`, fw, 1, T0);
    expect(e.takeChanged(4, T0).map((s) => s.key)).toEqual(["k0", "k1", "k2", "k3"]);
    expect(e.takeChanged(100, T0).map((s) => s.key)).toEqual(["k4", "k5", "k6", "k7", "k8", "k9"]);
  });

  it("a counter swept or handed over leaves the set", () => {
    const e = new Engine({ trackChanges: true });
    e.check("swept", fw, 1, T0);
    e.check("moved", fw, 1, T0 + 60_000);
    e.sweep(T0 + 60_001); // "swept"'s window is over
    expect(e.takeCounters((shard) => shard === "moved", T0 + 60_001)).toHaveLength(1);
    expect(keys(e, T0 + 60_001)).toEqual([]);
  });

  it("markChanged puts back what did not reach the buddy (only counters that still exist)", () => {
    const e = new Engine({ trackChanges: true });
    e.check("a", fw, 1, T0);
    e.check("b", fw, 1, T0);
    keys(e);
    e.markChanged(["a", "gone"]);
    expect(keys(e)).toEqual(["a"]);
  });

  it("stays bounded by the counter count under churn without a taker", () => {
    const e = new Engine({ trackChanges: true, maxCounters: 10_000 });
    // Counters made, marked and swept over and over: the stale keys are compacted away.
    for (let round = 0; round < 50; round++) {
      const now = T0 + round * 60_000;
      for (let i = 0; i < 100; i++) e.check(`r${round}-${i}`, fw, 1, now);
      expect(e.changedPending).toBeLessThanOrEqual(2 * e.size + 1025);
      e.sweep(now + 60_000);
    }
    for (let i = 0; i < 5000; i++) e.check("hot", fw, 0.001, T0);
    expect(e.changedPending).toBeLessThanOrEqual(2 * e.size + 1025);
  });

  it("keeps nothing unless asked to", () => {
    const e = new Engine();
    e.check("a", fw, 1, T0);
    expect(e.changedPending).toBe(0);
    expect(e.takeChanged(10, T0)).toEqual([]);
  });

  it("counters put by a handoff are marked (the new holder's buddy needs them)", () => {
    const a = new Engine();
    a.check("a", fw, 1, T0);
    const b = new Engine({ trackChanges: true });
    b.putCounters(
      a.takeCounters(() => true, T0),
      T0,
    );
    expect(keys(b)).toEqual(["a"]);
  });
});

describe("engine: a counter restored from a standby copy", () => {
  /** An owner's counter for `key` after `sync` units by Check and `batched` by one gateway's reports. */
  function copyOf(sync: number, batched: number, l = fw) {
    const owner = new Engine();
    if (sync > 0) owner.check("k", l, sync, T0);
    if (batched > 0) owner.report("k", l, "gw", entry(batched), true, 100, T0);
    return owner.takeCounters(() => true, T0 + 100);
  }

  it("a sync-only count is restored as it was", () => {
    const e = new Engine();
    e.putCounters(copyOf(60, 0), T0 + 200, "standby");
    expect(e.peek("k", fw, T0 + 200).remaining).toBe(40);
  });

  it("re-sent window totals raise the count past the copy (it may be one interval old), never doubling it", () => {
    // The copy saw 30 of the gateway's units; the gateway admitted 45 in the window before the crash.
    const e = new Engine();
    e.putCounters(copyOf(0, 30), T0 + 200, "standby");
    e.report("k", fw, "gw", entry(5, 45), true, 100, T0 + 300);
    expect(e.peek("k", fw, T0 + 300).remaining).toBe(100 - 45);
    // Later reports add as usual.
    e.report("k", fw, "gw", entry(2), true, 100, T0 + 400);
    expect(e.peek("k", fw, T0 + 400).remaining).toBe(100 - 47);
  });

  it("totals from several gateways: the window ends at the larger of the copy and their sum", () => {
    const e = new Engine();
    e.putCounters(copyOf(50, 0), T0 + 200, "standby");
    e.report("k", fw, "gw1", entry(1, 20), true, 100, T0 + 300); // under the copy: absorbed
    expect(e.peek("k", fw, T0 + 300).remaining).toBe(50);
    e.report("k", fw, "gw2", entry(1, 40), true, 100, T0 + 300); // 60 in all: 10 more
    expect(e.peek("k", fw, T0 + 300).remaining).toBe(40);
  });

  it("a handed-over counter is whole: re-sent totals are not added", () => {
    const e = new Engine();
    e.putCounters(copyOf(0, 30), T0 + 200, "handoff");
    e.report("k", fw, "gw", entry(5, 45), true, 100, T0 + 300);
    expect(e.peek("k", fw, T0 + 300).remaining).toBe(100 - 35);
  });

  it("in the next window the copy's units no longer absorb anything", () => {
    const e = new Engine();
    e.putCounters(copyOf(50, 0), T0 + 200, "standby");
    const next = T0 + 60_000 - (T0 % 60_000) + 10;
    e.report("k", fw, "gw", entry(5, 20), true, 100, next);
    expect(e.peek("k", fw, next).remaining).toBe(80);
  });

  it("a copy never replaces a counter already here (a handoff that came first is newer)", () => {
    const e = new Engine();
    e.putCounters(copyOf(70, 0), T0 + 200, "handoff");
    e.putCounters(copyOf(40, 0), T0 + 300, "standby");
    expect(e.peek("k", fw, T0 + 300).remaining).toBe(30);
  });

  it("a provisional copy is replaced whole by a handoff, even one whose window start reads earlier", () => {
    // The copy (60 used) was made before the live owner's counter (90 used); restored after its
    // time in a store, its window start reads a few ms later than the handoff's.
    const e = new Engine();
    const stale = copyOf(60, 0).map((c) => ({ ...c, tRelMs: c.tRelMs + 5 }));
    e.putCounters(stale, T0 + 200, "standby-until-handoff");
    e.putCounters(copyOf(90, 0), T0 + 200, "handoff");
    expect(e.peek("k", fw, T0 + 200).remaining).toBe(10);
    // A copy that is not provisional is merged instead (the fuller state stays).
    const f = new Engine();
    f.putCounters(copyOf(60, 0), T0 + 200, "standby");
    f.putCounters(copyOf(50, 0), T0 + 200, "handoff");
    expect(f.peek("k", fw, T0 + 200).remaining).toBe(40);
  });

  it("a token bucket's copy stands as it is (no window total to compare)", () => {
    const e = new Engine();
    e.putCounters(copyOf(8, 0, tb), T0 + 100, "standby");
    e.report("k", tb, "gw", entry(1, 5), true, 100, T0 + 100);
    // 20 - 8, one unit refilled in the 100 ms since, less the reported one; the 5 re-sent ignored.
    expect(e.peek("k", tb, T0 + 100).remaining).toBe(20 - 8 + 1 - 1);
  });
});
