import { describe, expect, it } from "vitest";
import {
  Engine,
  limitDefaults,
  restoreCounter,
  snapshotCounter,
  snapshotProblem,
} from "../../src/core/index.js";

const T0 = 1_700_000_000_000;
/** The receiver's clock runs 7 s ahead of the sender's: snapshots carry relative times. */
const SKEW = 7000;
const fw = limitDefaults({ algorithm: "fixed_window", limit: 10, windowMs: 1000 });
const sw = limitDefaults({ algorithm: "sliding_window", limit: 10, windowMs: 1000 });
const tb = limitDefaults({ algorithm: "token_bucket", limit: 10, windowMs: 1000, burst: 20 });
const cc = limitDefaults({ algorithm: "concurrency", limit: 5, leaseTimeoutMs: 10_000 });
const entry = (admitted: number, windowAdmitted = 0) => ({ admitted, rejected: 0, held: 0, windowAdmitted });

describe("counter handoff", () => {
  it("a taken counter decides on the receiver exactly as it would have on the sender", () => {
    for (const l of [fw, sw, tb]) {
      const a = new Engine();
      const b = new Engine();
      const ref = new Engine();
      for (const e of [a, ref]) {
        e.checkMany([{ key: "k", limit: l, cost: 4, shard: "g" }], T0 + 100, "strict");
        e.checkMany([{ key: "k", limit: l, cost: 3, shard: "g" }], T0 + 400, "strict");
      }
      const snaps = a.takeCounters((shard) => shard === "g", T0 + 500);
      expect(snaps).toHaveLength(1);
      expect(snaps[0]).toMatchObject({ key: "k", shard: "g", algorithm: l.algorithm });
      expect(a.size).toBe(0);
      expect(b.putCounters(snaps, T0 + 500 + SKEW)).toBe(1);
      for (const dt of [500, 900, 1200, 1700]) {
        expect(b.peek("k", l, T0 + dt + SKEW)).toEqual({
          ...ref.peek("k", l, T0 + dt),
          resetAt: ref.peek("k", l, T0 + dt).resetAt + SKEW,
          retryAt: ref.peek("k", l, T0 + dt).retryAt + SKEW,
        });
      }
    }
  });

  it("concurrency leases and reporting gateways come along", () => {
    const a = new Engine();
    a.acquire("c", cc, "lease-1", 2, T0, 5000);
    a.report("c", cc, "gw-1", { admitted: 0, rejected: 0, held: 1, windowAdmitted: 0 }, true, 100, T0);
    const snaps = a.takeCounters(() => true, T0 + 1000);
    const b = new Engine();
    b.putCounters(snaps, T0 + 1000 + SKEW);
    expect(b.peek("c", cc, T0 + 1000 + SKEW).remaining).toBe(2);
    // The lease keeps its deadline (4 s left at handoff).
    expect(b.peek("c", cc, T0 + 5001 + SKEW).remaining).toBe(4);
    expect(b.release("c", "lease-1", T0 + 1000 + SKEW)).toBe(false);
  });

  it("only the counters of the leaving shards are taken, and fresh ones are dropped, not sent", () => {
    const a = new Engine();
    a.check("x", fw, 1, T0);
    a.check("y", fw, 1, T0);
    a.check("z", fw, 1, T0);
    const snaps = a.takeCounters((shard) => shard !== "z", T0 + 5000);
    expect(snaps).toHaveLength(0); // their windows are over: nothing worth sending
    expect(a.size).toBe(1);
    a.check("x", fw, 1, T0 + 5000);
    expect(a.takeCounters((shard) => shard === "x", T0 + 5000).map((s) => s.key)).toEqual(["x"]);
  });

  it("a handed-over counter is whole: a gateway's re-sent window total is not counted again", () => {
    const a = new Engine();
    a.report("k", fw, "gw-1", entry(6), true, 100, T0 + 100);
    const b = new Engine();
    b.putCounters(
      a.takeCounters(() => true, T0 + 200),
      T0 + 200,
    );
    // After the generation change gw-2 (never seen by either) re-sends its window total with no
    // new traffic; the counter came whole from the old owner, so nothing is added.
    b.report("k", fw, "gw-2", entry(0, 3), true, 100, T0 + 300);
    expect(b.peek("k", fw, T0 + 300).remaining).toBe(4);
    // Without a handoff (a crash) the same re-send rebuilds the count.
    const c = new Engine();
    c.report("k", fw, "gw-2", entry(0, 3), true, 100, T0 + 300);
    expect(c.peek("k", fw, T0 + 300).remaining).toBe(7);
  });

  it("a late handoff meeting a counter the receiver started keeps the fuller state", () => {
    const a = new Engine();
    a.check("k", tb, 15, T0);
    const b = new Engine();
    b.check("k", tb, 2, T0);
    b.putCounters(
      a.takeCounters(() => true, T0),
      T0,
    );
    expect(b.peek("k", tb, T0).remaining).toBe(5);
    const c = new Engine();
    c.check("k", tb, 18, T0);
    const d = new Engine();
    d.check("k", tb, 1, T0);
    c.putCounters(
      d.takeCounters(() => true, T0),
      T0,
    );
    expect(c.peek("k", tb, T0).remaining).toBe(2);
  });

  it("malformed snapshots are named", () => {
    const c = new Engine();
    c.check("k", fw, 1, T0);
    const good = c.takeCounters(() => true, T0)[0]!;
    expect(snapshotProblem(good)).toBeUndefined();
    expect(snapshotProblem({ ...good, key: "" })).toMatch(/key is empty/);
    expect(snapshotProblem({ ...good, algorithm: "leaky" })).toMatch(/unknown algorithm leaky/);
    expect(snapshotProblem({ ...good, x: Number.NaN })).toMatch(/not finite/);
    expect(restoreCounter(good, T0).complete).toBe(true);
    expect(snapshotCounter("k", restoreCounter(good, T0), T0)).toEqual(good);
  });
});

describe("a fixed window handed over late (chaos: kill, a restarted owner taking its slices back)", () => {
  it("stays aligned to the epoch: the receiver's window ends when the sender's would have", () => {
    const a = new Engine();
    const w0 = T0 - (T0 % 1000);
    a.check("k", fw, 10, w0 + 400); // the window [w0, w0 + 1000) is full at the sender
    const snaps = a.takeCounters(() => true, w0 + 500);
    // The chunk reaches the receiver 400 ms later (a retry, a loaded machine): same clock.
    const b = new Engine();
    b.putCounters(snaps, w0 + 900);
    expect(b.peek("k", fw, w0 + 950).remaining).toBe(0);
    // The next window starts at w0 + 1000 there too (before: at w0 + 1400, so 10 units admitted
    // in [w0 + 1000, w0 + 1400) were counted in the old window and then forgotten).
    expect(b.check("k", fw, 10, w0 + 1100).allowed).toBe(true);
    expect(b.check("k", fw, 1, w0 + 1500).allowed).toBe(false);
    expect(b.peek("k", fw, w0 + 1500).resetAt).toBe(w0 + 2000);
    // A receiver whose clock is 50 ms behind the sender's, the chunk 10 ms in transit: still w0.
    const c = new Engine();
    c.putCounters(a2(), w0 + 510 - 50);
    expect(c.peek("k", fw, w0 + 950 - 50).remaining).toBe(0);
    function a2() {
      const s = new Engine();
      s.check("k", fw, 10, w0 + 400);
      return s.takeCounters(() => true, w0 + 500);
    }
  });
});
