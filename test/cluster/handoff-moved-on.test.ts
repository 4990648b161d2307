import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Handoff } from "../../src/cluster/handoff.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { ManualClock } from "../../src/core/clock.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
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
/** A's chunk for generation 2 (its move of the lower slice to B), with the key's counter. */
const aChunk = (): HandoffRequest => ({
  generation: 2,
  from: "a",
  ranges: [{ start: 0, end: HALF }],
  counters: [snapshot(key)],
  done: true,
});

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
    // counters reach B. B's own handoff to C (nothing of its own) would say done at once, and C,
    // done with B, would refuse what B passes on later: it waits for A's counters first.
    ownership.update(table(1, [0, 1]));
    ownership.update(table(2, [1, 1]));
    const sending = b.send(ownership.update(table(3, [2, 1]))!);
    await settle();
    expect(toC).toEqual([]);

    // A's chunk for generation 2 arrives late.
    const res = b.receive(aChunk());
    expect(res.error?.code ?? 0).toBe(0);
    await sending;
    await b.idle();
    expect(put).toEqual([]);
    // B passes them on to the range's owner now, as a handoff of its own that marks nothing ready
    // at C; then B's own chunk ends its move.
    expect(toC).toHaveLength(2);
    expect(toC[0]).toMatchObject({ generation: 3, from: "b", done: false });
    expect(toC[0]!.counters.map((s) => s.key)).toEqual([key]);
    expect(toC[1]).toMatchObject({ generation: 3, from: "b", done: true, counters: [] });
  });

  it("B's own handoff to C waits for A's counters only until B's wait for them would have ended", async () => {
    const clock = new ManualClock();
    const ownership = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    const toC: HandoffRequest[] = [];
    const b = new Handoff({
      selfId: "b",
      store: listStore(),
      ownership,
      peer: () => ({
        handoff: async (req) => {
          toC.push(req as HandoffRequest);
          return { accepted: 0, generation: 3 };
        },
      }),
      clock,
      log,
    });
    ownership.update(table(1, [0, 1]));
    clock.advance(1000);
    ownership.update(table(2, [1, 1])); // B waits for A until 4,000 ms
    const sending = b.send(ownership.update(table(3, [2, 1]))!);
    clock.advance(2999);
    await settle();
    expect(toC).toEqual([]);
    clock.advance(1);
    await sending;
    expect(toC.map((r) => r.done)).toEqual([true]);
    // A member that is no longer one sends nothing: nothing to wait for.
    ownership.update(table(4, [0, 1]));
    ownership.update(table(5, [1, 1])); // B waits for A...
    const gone = new Assignment(6, [m("b"), m("c")], Uint32Array.of(0, HALF), Uint16Array.of(1, 0));
    await b.send(ownership.update(gone)!); // ...who left as B lost the range to C
    expect(toC.map((r) => r.done)).toEqual([true, true]);
  });

  it("B's chunk that ends its own move to C waits for A's counters B passes on to C", async () => {
    // A -> B (generation 2), then B -> C (generation 3). C is behind at first (it answers "retry")
    // and catches up while both B's own last chunk and the counters B passes on are waiting to be
    // sent again. C, as a real receiver, takes nothing of the move after its `done`.
    const clock = new ManualClock();
    const ownership = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    let caughtUp = false;
    let doneAtC = false;
    /** What C took, in order: "done" for the chunk ending B's move, keys for counters. */
    const taken: string[] = [];
    const c: Pick<PeerRpc, "handoff"> = {
      handoff: async (r) => {
        const req = r as HandoffRequest;
        if (!caughtUp)
          return {
            accepted: 0,
            generation: 2,
            error: { code: ErrorCode.SLICE_NOT_READY, message: "behind" },
          };
        if (doneAtC && req.counters.length > 0)
          return {
            accepted: 0,
            generation: 3,
            error: { code: ErrorCode.PERMISSION_DENIED, message: "no move pending" },
          };
        taken.push(...req.counters.map((s) => s.key));
        if (req.done) {
          doneAtC = true;
          taken.push("done");
        }
        return { accepted: req.counters.length, generation: 3 };
      },
    };
    const b = new Handoff({
      selfId: "b",
      store: listStore(),
      ownership,
      peer: () => c,
      clock,
      log,
      retryMs: 100,
    });
    ownership.update(table(1, [0, 1]));
    ownership.update(table(2, [1, 1]));
    const own = b.send(ownership.update(table(3, [2, 1]))!);
    await settle(); // B's own (empty, done) chunk: C is behind; again at 100 ms
    clock.advance(50);
    // A's chunk for generation 2 reaches B now: passed on to C (behind too; again at 150 ms).
    b.receive(aChunk());
    await settle();
    caughtUp = true;
    for (let i = 0; i < 4; i++) {
      clock.advance(50);
      await settle();
      await settle();
    }
    await own;
    // Before: B's own chunk went again at 100 ms and said done; A's counters, at 150 ms, were refused.
    expect(taken).toEqual([key, "done"]);
  });

  it("counters that come after the range moved on twice go to the member B lost it to, not its owner now", async () => {
    // A -> B (2), B -> C (3), C -> D (4); A's chunk reaches B last. C waits for them from B (and
    // passes them on to D, who waits for them from C); D would refuse them from B.
    const clock = new ManualClock();
    const ownership = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    const four = [...members, m("d")];
    const at = (gen: number, owners: number[]) =>
      new Assignment(gen, four, Uint32Array.of(0, HALF), Uint16Array.from(owners));
    const sent: [string, HandoffRequest][] = [];
    const b = new Handoff({
      selfId: "b",
      store: listStore(),
      ownership,
      peer: (address) => ({
        handoff: async (req) => {
          sent.push([address, req as HandoffRequest]);
          return { accepted: (req as HandoffRequest).counters.length, generation: 4 };
        },
      }),
      clock,
      log,
    });
    ownership.update(at(1, [0, 1]));
    ownership.update(at(2, [1, 1]));
    const toC = b.send(ownership.update(at(3, [2, 1]))!);
    ownership.update(at(4, [3, 1]));
    b.receive(aChunk());
    await toC;
    await b.idle();
    expect(sent.map(([to, r]) => [to, r.counters.map((s) => s.key), r.done])).toEqual([
      ["c:1", [key], false],
      ["c:1", [], true],
    ]);
  });
});
