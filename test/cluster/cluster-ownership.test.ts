import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { ManualClock } from "../../src/core/clock.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import { place } from "../../src/keyspace/placement.js";

const m = (id: string, draining = false): Member => ({
  id,
  address: `${id}:1`,
  ...(draining ? { draining } : {}),
});
const HALF = 2 ** 31;
/** Two slices: [0, 2^31) and [2^31, 2^32). */
const table = (gen: number, members: Member[], owners: number[], previous?: Assignment) =>
  new Assignment(gen, members, Uint32Array.of(0, HALF), Uint16Array.from(owners), previous);

/** A key whose point falls in the lower or upper half. */
function keyIn(half: 0 | 1): string {
  for (let i = 0; ; i++) if (keyPoint(`key-${i}`) >= HALF === (half === 1)) return `key-${i}`;
}

describe("ownership by generation", () => {
  it("keeps a key's point where the caller asks, and answers from a kept one without hashing", () => {
    const o = new ClusterOwnership({ selfId: "a", clock: new ManualClock(), handoffTimeoutMs: 1000 });
    o.update(table(1, [m("a"), m("b")], [0, 1]));
    const placed: { point: number | undefined } = { point: undefined };
    expect(o.check(keyIn(0), placed)).toBe("own");
    expect(placed.point).toBe(keyPoint(keyIn(0)));
    // A kept point is taken as the key's: one in b's half is answered as b's.
    expect(o.check(keyIn(0), { point: HALF + 1 })).toBe("not_owner");
    expect(o.ownerOf(keyIn(0), { point: HALF + 1 })?.id).toBe("b");
    expect(o.ownerOf(keyIn(1), placed)?.id).toBe("a");
  });

  it("owns nothing before an assignment, then exactly its slices", () => {
    const o = new ClusterOwnership({ selfId: "a", clock: new ManualClock(), handoffTimeoutMs: 1000 });
    expect(o.check(keyIn(0))).toBe("not_owner");
    expect(o.ready()).toBe(false);
    o.update(table(1, [m("a"), m("b")], [0, 1]));
    expect(o.check(keyIn(0))).toBe("own");
    expect(o.check(keyIn(1))).toBe("not_owner");
    expect(o.ownerOf(keyIn(1))).toEqual({ id: "b", address: "b:1", self: false });
    expect(o.ready()).toBe(true);
    expect(o.slicesOwned()).toBe(1);
  });

  it("generations only grow: an older or equal one is ignored", () => {
    const o = new ClusterOwnership({ selfId: "a", clock: new ManualClock(), handoffTimeoutMs: 1000 });
    o.update(table(5, [m("a"), m("b")], [0, 1]));
    expect(o.update(table(4, [m("a"), m("b")], [1, 0]))).toBeUndefined();
    expect(o.update(table(5, [m("a"), m("b")], [1, 0]))).toBeUndefined();
    expect(o.check(keyIn(0))).toBe("own");
  });

  it("a range given by a live member waits for its handoff; one from a dead member is served at once", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 });
    const g1 = table(1, [m("a"), m("b"), m("c")], [1, 2]);
    o.update(g1);
    // b drains (still a member), c crashed (gone): a gets both halves.
    const change = o.update(table(2, [m("a"), m("b", true)], [0, 0], g1))!;
    expect(change.gained.map((x) => x.from.id)).toEqual(["b", "c"]);
    expect(change.pending.map((p) => p.from)).toEqual(["b"]);
    expect(o.check(keyIn(0))).toBe("not_ready");
    expect(o.check(keyIn(1))).toBe("own");
    expect(o.ready()).toBe(false);
    o.handoffDone("b", 2);
    expect(o.check(keyIn(0))).toBe("own");
    expect(o.ready()).toBe(true);
  });

  it("with reclaimOrphans, a range from a member that left without handing over waits for its counters too", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000, reclaimOrphans: true });
    const g1 = table(1, [m("a"), m("c")], [0, 1]);
    o.update(g1);
    // c's lease expired (cut off from etcd, or dead): a is given c's half.
    const change = o.update(table(2, [m("a")], [0, 0], g1))!;
    expect(change.orphaned.map((x) => [x.from.id, x.from.address])).toEqual([["c", "c:1"]]);
    expect(change.pending.map((p) => p.from)).toEqual(["c"]);
    expect(o.check(keyIn(1))).toBe("not_ready");
    expect(o.check(keyIn(0))).toBe("own");
    // c answered with its counters (or could not be reached): served.
    o.handoffDone("c", 2);
    expect(o.check(keyIn(1))).toBe("own");
    expect(o.ready()).toBe(true);
  });

  it("a range still waiting for a sender that has since left the cluster is reclaimed from it", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 12_000, reclaimOrphans: true });
    const g1 = table(1, [m("a"), m("b")], [1, 1]);
    o.update(g1);
    const g2 = table(2, [m("a"), m("b")], [0, 1], g1);
    expect(o.update(g2)!.pending.map((p) => p.from)).toEqual(["b"]);
    clock.advance(3000);
    // b's lease expired before its handoff came (it died, or etcd lost it): before, the range
    // waited out the rest of the 12 s; now it is in `orphaned`, and the node asks b (a dead b does
    // not answer: served at once).
    const change = o.update(table(3, [m("a")], [0, 0], g2))!;
    // The upper half, gained now from b, and the lower half, still waiting for b.
    expect(change.orphaned.map((x) => [x.from.id, x.from.address, x.start])).toEqual([
      ["b", "b:1", HALF],
      ["b", "b:1", 0],
    ]);
    expect(o.check(keyIn(0))).toBe("not_ready");
    o.handoffDone("b", 3);
    expect(o.check(keyIn(0))).toBe("own");
  });

  it("a handoff that never comes is given up at the deadline", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 });
    const g1 = table(1, [m("a"), m("b")], [1, 1]);
    o.update(g1);
    o.update(table(2, [m("a"), m("b")], [0, 1], g1));
    clock.advance(999);
    expect(o.check(keyIn(0))).toBe("not_ready");
    clock.advance(1);
    expect(o.check(keyIn(0))).toBe("own");
  });

  it("a wall clock stepped back does not stretch the handoff wait (deadlines are monotonic)", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 });
    const g1 = table(1, [m("a"), m("b")], [1, 1]);
    o.update(g1);
    o.update(table(2, [m("a"), m("b")], [0, 1], g1));
    clock.set(clock.now() - 3_600_000); // NTP steps the wall clock an hour back
    clock.advance(999);
    expect(o.check(keyIn(0))).toBe("not_ready");
    clock.advance(1);
    // Before: the deadline was a wall time, an hour away now.
    expect(o.check(keyIn(0))).toBe("own");
  });

  it("the sender sees what it lost; a server that missed a generation uses the predecessor the assignment names", () => {
    const a = new ClusterOwnership({ selfId: "a", clock: new ManualClock(), handoffTimeoutMs: 1000 });
    const g1 = place(1, [m("a"), m("b")], Uint32Array.of(0, HALF));
    a.update(g1);
    const g2 = table(2, [m("a"), m("b")], [1, 1], g1);
    const lost = a.update(g2)!.lost;
    const aHad = g1.owners.reduce((n, o) => n + (o === 0 ? 1 : 0), 0);
    expect(lost.length).toBe(aHad);
    expect(lost.every((x) => x.to.id === "b")).toBe(true);
    // b starts late and sees only generation 2: it still knows a has counters for it.
    const b = new ClusterOwnership({ selfId: "b", clock: new ManualClock(), handoffTimeoutMs: 1000 });
    expect(b.update(g2)!.pending.map((p) => p.from)).toEqual(lost.map(() => "a"));
  });

  it("changed() resolves at the next update, or after its timeout", async () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 });
    // The timeout runs on the ownership's clock, exactly: not at 29 ms, at 30.
    let resolved = false;
    const timedOut = o.changed(30).then(() => {
      resolved = true;
    });
    clock.advance(29);
    await Promise.resolve();
    expect(resolved).toBe(false);
    clock.advance(1);
    await timedOut;
    expect(resolved).toBe(true);
    const p = o.changed(60_000);
    o.update(table(1, [m("a")], [0, 0]));
    await p;
  });
});

describe("a restarted server's own ranges (standby copies)", () => {
  it("awaitOwn holds them not ready until handoffDone from itself, or the handoff timeout", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 });
    o.update(table(3, [m("a"), m("b")], [0, 1]));
    o.awaitOwn([{ start: 0, end: HALF }], 3, "a:1");
    expect(o.check(keyIn(0))).toBe("not_ready");
    expect(o.ready()).toBe(false);
    o.handoffDone("b", 3);
    expect(o.check(keyIn(0))).toBe("not_ready");
    o.handoffDone("a", 3);
    expect(o.check(keyIn(0))).toBe("own");
    o.awaitOwn([{ start: 0, end: HALF }], 3, "a:1");
    clock.advance(1000);
    expect(o.check(keyIn(0))).toBe("own");
  });
});

describe("a server that skipped generations", () => {
  // The chaos cutoff failure: s3 held generation 3, gave its lower half up to a reclaim for 4
  // (s1's), 5 gave it back (s1 hands its counters over for 5), 6 moved nothing. s3's view jumped
  // from 3 to 6: read against 5 the half was "kept", s3 served it from nothing and refused s1's
  // handoff (1.13-1.43x the limit in the window of s3's return).
  const members = [m("s1"), m("s2"), m("s3")];
  const g3 = table(3, members, [2, 1]);
  const g4 = table(4, [m("s1"), m("s2")], [0, 1], g3);
  const g5 = table(5, members, [2, 1], g4);
  const g6 = table(6, members, [2, 1], g5);

  it("a range it gave away and owns again without a move it saw waits for any member's handoff", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "s3", clock, handoffTimeoutMs: 10_000, reclaimOrphans: true });
    o.update(g3);
    o.release([{ start: 0, end: HALF }]); // s1's reclaim for generation 4
    const change = o.update(g6)!;
    expect(change.gained).toEqual([]);
    expect(change.pending.map((p) => [p.from, p.start, p.end])).toEqual([["", 0, HALF]]);
    expect(change.orphaned).toEqual([]);
    expect(o.check(keyIn(0))).toBe("not_ready");
    // s1's handoff for generation 5 may fill it; a done covering part of it ends that part.
    expect(o.handoffRefusal("s1")(keyPoint(keyIn(0)))).toBeUndefined();
    o.handoffDone("s1", 5, [{ start: 0, end: HALF / 2 }]);
    expect(o.waiting().map((p) => [p.start, p.end])).toEqual([[HALF / 2, HALF]]);
    o.handoffDone("s2", 5, [{ start: HALF / 2, end: HALF }]);
    expect(o.waiting()).toEqual([]);
    expect(o.check(keyIn(0))).toBe("own");
  });

  it("a range that came to it in a skipped generation waits too; one it kept throughout does not", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "s1", clock, handoffTimeoutMs: 10_000 });
    o.update(g3); // s1 owns nothing
    // 4 gives s1 the lower half (from s3); s1 sees only 6, whose predecessor 5 gave it back to s3:
    // nothing to wait for. With 4 -> 5 -> a 6 where s1 still owns it, s1 waits for s3's handoff.
    const g5b = table(5, members, [0, 1], g4);
    const g6b = table(6, members, [0, 1], g5b);
    expect(o.update(g6b)!.pending.map((p) => p.from)).toEqual([""]);
    expect(o.check(keyIn(0))).toBe("not_ready");
    expect(o.handoffRefusal("s3")(keyPoint(keyIn(0)))).toBeUndefined();
    clock.advance(10_000);
    expect(o.check(keyIn(0))).toBe("own");

    const kept = new ClusterOwnership({ selfId: "s2", clock, handoffTimeoutMs: 10_000 });
    kept.update(g3);
    expect(kept.update(g6)!.pending).toEqual([]);
    expect(kept.check(keyIn(1))).toBe("own");
  });

  it("without a release, consecutive generations name the sender as before", () => {
    const o = new ClusterOwnership({ selfId: "s3", clock: new ManualClock(), handoffTimeoutMs: 10_000 });
    o.update(g3);
    o.release([{ start: 0, end: HALF }]);
    // Installing 4 consumes the release (the half is lost there); 5 then names s1.
    expect(o.update(g4)!.lost.map((x) => x.to.id)).toEqual(["s1"]);
    expect(o.update(g5)!.pending.map((p) => p.from)).toEqual(["s1"]);
    expect(o.handoffRefusal("s2")(keyPoint(keyIn(0)))).toMatch(/no range this server gained/);
  });
});
