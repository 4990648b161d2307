import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { type CounterStore, Handoff } from "../../src/cluster/handoff.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { limitDefaults } from "../../src/core/limit.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import type { HandoffRequest } from "../../src/protocol/messages.js";

const log = pino({ level: "silent" });
const m = (id: string): Member => ({ id, address: `${id}:1` });
const T0 = 1_700_000_000_000;
const tb = limitDefaults({ algorithm: "token_bucket", limit: 100, windowMs: 60_000 });
const N = 10_000;
const CHUNK = 500;

/** An engine with N live counters, its takes observed: the event-loop turn of each slice taken. */
function setup() {
  const engine = new Engine({ pointOf: keyPoint });
  for (let i = 0; i < N; i++) engine.check(`d/k=${i}`, tb, 1, T0);
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  const sliceTurns: number[][] = [];
  const store: CounterStore = {
    takeRanges: (ranges, pointOf) => {
      const take = engine.takeRanges(ranges, pointOf);
      const turns: number[] = [];
      sliceTurns.push(turns);
      return {
        next: (now, budget) => {
          turns.push(turn);
          return take.next(now, budget);
        },
      };
    },
    putCounters: (s, now) => engine.putCounters(s, now),
  };
  const received = new Map<string, HandoffRequest[]>();
  const peer = (address: string): Pick<PeerRpc, "handoff"> => ({
    // Answers at once: without a yield of its own the sender would never leave the turn.
    handoff: async (req) => {
      const list = received.get(address) ?? [];
      list.push(req as HandoffRequest);
      received.set(address, list);
      return { accepted: (req as HandoffRequest).counters.length, generation: 2 };
    },
  });
  return { engine, store, sliceTurns, received, peer, stop: () => (ticking = false) };
}

describe("the handoff takes and sends a slice per turn of the event loop", () => {
  it("yields between slices and delivers every counter once, to its new owner, the last chunk done", async () => {
    const { engine, store, sliceTurns, received, peer, stop } = setup();
    const clock = new ManualClock(T0 + 1);
    const sent: [string, number, boolean][] = [];
    const handoff = new Handoff({
      selfId: "a",
      store,
      ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
      peer,
      clock,
      log,
      chunk: CHUNK,
      onSent: (to, n, ok) => sent.push([to, n, ok]),
    });
    // Two of four quarters leave, to two new owners; a and its last quarter stay.
    const Q = 2 ** 30;
    await handoff.send({
      generation: 2,
      lost: [
        { start: 0, end: Q, from: m("a"), to: m("b") },
        { start: Q, end: 2 * Q, from: m("a"), to: m("c") },
        { start: 2 * Q, end: 3 * Q, from: m("a"), to: m("b") },
      ],
      gained: [],
      pending: [],
      orphaned: [],
    });
    stop();
    // Every slice of a take in a later turn than the one before: the thread was let go between.
    expect(sliceTurns).toHaveLength(2);
    for (const turns of sliceTurns) {
      expect(turns.length).toBeGreaterThan(3);
      for (let i = 1; i < turns.length; i++) expect(turns[i]!).toBeGreaterThan(turns[i - 1]!);
    }
    const keysAt = (addr: string) => received.get(addr)!.flatMap((r) => r.counters.map((c) => c.key));
    const expected = (lo: number, hi: number) =>
      Array.from({ length: N }, (_, i) => `d/k=${i}`).filter((k) => keyPoint(k) >= lo && keyPoint(k) < hi);
    const toB = keysAt("b:1");
    const toC = keysAt("c:1");
    expect(toB.sort()).toEqual([...expected(0, Q), ...expected(2 * Q, 3 * Q)].sort());
    expect(toC.sort()).toEqual(expected(Q, 2 * Q).sort());
    for (const reqs of received.values()) {
      expect(reqs.map((r) => r.done)).toEqual(reqs.map((_, i) => i === reqs.length - 1));
      for (const r of reqs) expect(r.counters.length).toBeLessThanOrEqual(CHUNK);
    }
    expect(sent.sort()).toEqual([
      ["b", toB.length, true],
      ["c", toC.length, true],
    ]);
    // What stays is the last quarter, none of it taken.
    expect(engine.size).toBe(expected(3 * Q, 2 ** 32).length);
    expect(engine.size + toB.length + toC.length).toBe(N);
  });

  it("a receiver given up on: the rest of its ranges still come out of the store, counted lost", async () => {
    const { engine, store, peer, stop } = setup();
    const clock = new ManualClock(T0 + 1);
    const sent: [string, number, boolean][] = [];
    const down: Pick<PeerRpc, "handoff"> = {
      ...peer("x"),
      handoff: () => Promise.reject(new Error("14 UNAVAILABLE")),
    };
    const handoff = new Handoff({
      selfId: "a",
      store,
      ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
      peer: () => down,
      clock,
      log,
      chunk: CHUNK,
      giveUpMs: 0,
      onSent: (to, n, ok) => sent.push([to, n, ok]),
    });
    await handoff.send({
      generation: 2,
      lost: [{ start: 0, end: 2 ** 31, from: m("a"), to: m("b") }],
      gained: [],
      pending: [],
      orphaned: [],
    });
    stop();
    const lower = Array.from({ length: N }, (_, i) => `d/k=${i}`).filter((k) => keyPoint(k) < 2 ** 31);
    expect(sent).toEqual([["b", lower.length, false]]);
    expect(engine.size).toBe(N - lower.length);
  });

  it("ranges given back to this server while the take is under way: their counters stay, none lost or sent twice", async () => {
    const { engine, store, received, peer, stop } = setup();
    const clock = new ManualClock(T0 + 1);
    const HALF = 2 ** 31;
    const members = [m("a"), m("b")];
    const table = (gen: number, owners: number[]) =>
      new Assignment(gen, members, Uint32Array.of(0, HALF), Uint16Array.from(owners));
    const ownership = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 });
    ownership.update(table(1, [0, 0]));
    const change = ownership.update(table(2, [1, 0]))!;
    let turns = 0;
    const handoff = new Handoff({
      selfId: "a",
      store,
      ownership,
      peer,
      clock,
      log,
      chunk: CHUNK,
      // Generation 3 gives the lower half back to a after a few slices.
      yieldTurn: async () => {
        if (++turns === 3) ownership.update(table(3, [0, 0]));
      },
    });
    await handoff.send(change);
    stop();
    const sentKeys = received.get("b:1")!.flatMap((r) => r.counters.map((c) => c.key));
    expect(sentKeys.length).toBeGreaterThan(0);
    const lower = Array.from({ length: N }, (_, i) => `d/k=${i}`).filter((k) => keyPoint(k) < HALF);
    expect(sentKeys.length).toBeLessThan(lower.length);
    // Every counter once: either sent before the change or still here.
    const here = engine.takeCounters(() => true, T0 + 1).map((c) => c.key);
    expect(here.length + sentKeys.length).toBe(N);
    expect(new Set([...here, ...sentKeys]).size).toBe(N);
  });
});
