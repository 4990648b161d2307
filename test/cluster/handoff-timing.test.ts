import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Handoff } from "../../src/cluster/handoff.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { ManualClock } from "../../src/core/clock.js";
import type { Member } from "../../src/keyspace/assignment.js";
import type { HandoffRequest } from "../../src/protocol/messages.js";
import { listStore, snapshot } from "./handoff-fakes.js";

const log = pino({ level: "silent" });
const m = (id: string): Member => ({ id, address: `${id}:1` });
/** Lets the handoff's awaits (a failed call, then its retry sleep) settle. */
const settle = () => new Promise((r) => setImmediate(r));

describe("handoff retries on its clock", () => {
  it("retries an unreachable receiver every retryMs and gives up at giveUpMs, exactly", async () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const tries: number[] = [];
    const sent: [string, number, boolean][] = [];
    const peer: Pick<PeerRpc, "handoff"> = {
      handoff: () => {
        tries.push(clock.now() - t0);
        return Promise.reject(new Error("unreachable"));
      },
    };
    const handoff = new Handoff({
      selfId: "a",
      store: listStore(),
      ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
      peer: () => peer,
      clock,
      log,
      retryMs: 100,
      giveUpMs: 1000,
      onSent: (to, n, ok) => sent.push([to, n, ok]),
    });
    const done = handoff.send({
      generation: 2,
      lost: [{ start: 0, end: 2 ** 32, from: m("a"), to: m("b") }],
      gained: [],
      pending: [],
      orphaned: [],
    });
    await settle();
    expect(tries).toEqual([0]);
    clock.advance(99);
    await settle();
    expect(tries).toEqual([0]);
    clock.advance(1);
    await settle();
    expect(tries).toEqual([0, 100]);
    for (let i = 0; i < 8; i++) {
      clock.advance(100);
      await settle();
    }
    expect(tries.at(-1)).toBe(900);
    expect(sent).toEqual([]);
    // The try at 1000 ms fails too, at the give-up time: no further retry.
    clock.advance(100);
    await done;
    expect(tries).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
    expect(sent).toEqual([["b", 0, false]]);
    expect(clock.pending).toBe(0);
  });

  it("a chunk sent again after a wait carries its counters aged by the wait", async () => {
    const clock = new ManualClock();
    const got: HandoffRequest[] = [];
    let down = true;
    const peer: Pick<PeerRpc, "handoff"> = {
      handoff: async (req) => {
        if (down) throw new Error("unreachable");
        got.push(req as HandoffRequest);
        return { accepted: 1, generation: 2 };
      },
    };
    const handoff = new Handoff({
      selfId: "a",
      store: listStore([snapshot("d/k=1")]),
      ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
      peer: () => peer,
      clock,
      log,
      retryMs: 100,
      giveUpMs: 10_000,
    });
    const done = handoff.send({
      generation: 2,
      lost: [{ start: 0, end: 2 ** 32, from: m("a"), to: m("b") }],
      gained: [],
      pending: [],
      orphaned: [],
    });
    for (let i = 0; i < 30; i++) {
      clock.advance(100);
      await settle();
    }
    down = false;
    clock.advance(100);
    await done;
    const c = got[0]!.counters[0]!;
    // Taken at 0 with the window 10 ms old; received 3,100 ms later. Before: tRelMs -10 (the
    // receiver would have put a 3 s old window's count into its current window).
    expect(c.tRelMs).toBe(-10 - 3100);
    expect(c.expiresInMs).toBe(60_000 - 3100);
    expect(c.clients.map((x) => x.seenMsAgo)).toEqual([10 + 3100]);
  });
});
