import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Handoff } from "../../src/cluster/handoff.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { ManualClock } from "../../src/core/clock.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import type { HandoffRequest } from "../../src/protocol/messages.js";
import { listStore, snapshot } from "./handoff-fakes.js";

const log = pino({ level: "silent" });
const m = (id: string): Member => ({ id, address: `${id}:1` });
const HALF = 2 ** 31;
const members = [m("a"), m("b"), m("c")];
/** Two slices, [0, 2^31) and [2^31, 2^32); `owners` by index into a, b, c. */
const table = (gen: number, owners: number[]) =>
  new Assignment(gen, members, Uint32Array.of(0, HALF), Uint16Array.from(owners));
/** A key in the lower half: the slice that moves. */
const key = (() => {
  for (let i = 0; ; i++) if (keyPoint(`d/k=${i}`) < HALF) return `d/k=${i}`;
})();
const settle = () => new Promise((r) => setImmediate(r));

describe("back-to-back moves", () => {
  it("counters handed to B after B already lost the range to C end up at C, once", async () => {
    const clock = new ManualClock();
    const ownership = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    const toC: HandoffRequest[] = [];
    const c: Pick<PeerRpc, "handoff"> = {
      handoff: async (req) => {
        toC.push(req as HandoffRequest);
        return { accepted: (req as HandoffRequest).counters.length, generation: 3 };
      },
    };
    const put: CounterSnapshot[] = [];
    const b = new Handoff({
      selfId: "b",
      store: listStore([], put),
      ownership,
      peer: (address) => {
        expect(address).toBe("c:1");
        return c;
      },
      clock,
      log,
    });
    // Generation 2 moves the lower slice A -> B; generation 3 moves it on, B -> C, before A's
    // counters reach B. B hands C what it holds of the slice (nothing yet).
    ownership.update(table(1, [0, 1]));
    ownership.update(table(2, [1, 1]));
    await b.send(ownership.update(table(3, [2, 1]))!);
    expect(toC).toHaveLength(1);
    expect(toC[0]!.counters).toEqual([]);

    // A's chunk for generation 2 arrives late.
    const res = b.receive({
      generation: 2,
      from: "a",
      ranges: [{ start: 0, end: HALF }],
      counters: [snapshot(key)],
      done: true,
    });
    expect(res.error?.code ?? 0).toBe(0);
    await b.idle();
    await settle();
    expect(put).toEqual([]);
    // B passes them on to the range's owner now, as a handoff of its own that marks nothing ready
    // at C (C's wait for B's own handoff is decided by B's own `done`).
    expect(toC).toHaveLength(2);
    expect(toC[1]).toMatchObject({ generation: 3, from: "b", done: false });
    expect(toC[1]!.counters.map((s) => s.key)).toEqual([key]);
  });
});
