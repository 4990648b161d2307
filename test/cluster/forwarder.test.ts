import { describe, expect, it } from "vitest";
import { BatchingForwarder } from "../../src/cluster/forwarder.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { ManualClock } from "../../src/core/clock.js";
import { NotOwnerError, UnavailableError } from "../../src/core/errors.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { ForwardRequest, ForwardResponse } from "../../src/protocol/messages.js";

const owner = { id: "b", address: "b:1", self: false };

/** A peer that records each Forward call and answers it with `answer` once released. */
function fakePeer(answer: (req: ForwardRequest) => ForwardResponse | Error) {
  const calls: ForwardRequest[] = [];
  const pending: (() => void)[] = [];
  const peer: Pick<PeerRpc, "forward"> = {
    forward: (req) =>
      new Promise((resolve, reject) => {
        calls.push(req as ForwardRequest);
        pending.push(() => {
          const a = answer(req as ForwardRequest);
          if (a instanceof Error) reject(a);
          else resolve(a);
        });
      }),
  };
  const releaseAll = () => {
    for (const p of pending.splice(0)) p();
  };
  return { peer, calls, releaseAll };
}

const echo = (req: ForwardRequest): ForwardResponse => ({
  generation: 7,
  envoy: req.envoy.map((e) => ({
    response: { overallCode: 1, statuses: e.descriptors.map(() => ({ code: 1 })) },
  })),
  checks: req.checks.map((c) => ({ generation: 7, results: c.items.map(() => ({ allowed: true })) })),
  checkErrors: req.checks.map(() => ({ code: 0 as ErrorCode, message: "" })),
});

const check = (n: number) => ({
  items: Array.from({ length: n }, (_, i) => ({ key: `k${i}`, cost: 1 })),
  atomic: false,
  generation: 3,
});
const tick = () => new Promise((r) => setImmediate(r));

describe("forwarding in micro-batches", () => {
  it("parts sent in one turn of the event loop go out in one call, answered each in order", async () => {
    const f = fakePeer(echo);
    const fw = new BatchingForwarder({ peer: () => f.peer });
    const answers = Promise.all([
      fw.check(owner, check(1), 3),
      fw.envoy(owner, { domain: "d", descriptors: [{ entries: [] }, { entries: [] }], hitsAddend: 0 }, 3),
      fw.check(owner, check(2), 3),
    ]);
    await tick();
    expect(f.calls).toHaveLength(1);
    expect(f.calls[0]!.checks).toHaveLength(2);
    expect(f.calls[0]!.envoy).toHaveLength(1);
    expect(f.calls[0]!.generation).toBe(3);
    f.releaseAll();
    const [c1, e, c2] = await answers;
    expect(c1.results).toHaveLength(1);
    expect(e.statuses).toHaveLength(2);
    expect(c2.results).toHaveLength(2);
  });

  it("while calls are in flight, new parts queue and go out together when one returns", async () => {
    const f = fakePeer(echo);
    const fw = new BatchingForwarder({ peer: () => f.peer, maxInFlight: 1 });
    const first = fw.check(owner, check(1), 1);
    await tick();
    const later = Array.from({ length: 5 }, () => fw.check(owner, check(1), 1));
    await tick();
    expect(f.calls).toHaveLength(1);
    f.releaseAll();
    await first;
    await tick();
    expect(f.calls).toHaveLength(2);
    expect(f.calls[1]!.checks).toHaveLength(5);
    f.releaseAll();
    expect(await Promise.all(later)).toHaveLength(5);
  });

  it("a part the owner does not own rejects with NotOwnerError; a failed call rejects every part", async () => {
    const f = fakePeer((req) => ({
      ...echo(req),
      checkErrors: [{ code: ErrorCode.NOT_OWNER, message: "not mine" }],
    }));
    const fw = new BatchingForwarder({ peer: () => f.peer });
    const p = fw.check(owner, check(1), 1);
    await tick();
    f.releaseAll();
    await expect(p).rejects.toBeInstanceOf(NotOwnerError);

    const down = fakePeer(() => new Error("connect ECONNREFUSED"));
    const fw2 = new BatchingForwarder({ peer: () => down.peer, resends: 0 });
    const parts = [
      fw2.check(owner, check(1), 1),
      fw2.envoy(owner, { domain: "d", descriptors: [], hitsAddend: 0 }, 1),
    ];
    await tick();
    down.releaseAll();
    for (const part of parts) await expect(part).rejects.toBeInstanceOf(UnavailableError);
  });

  it("parts queued past maxQueued per owner are refused at once, never sent", async () => {
    const f = fakePeer(echo);
    const fw = new BatchingForwarder({ peer: () => f.peer, maxInFlight: 1, maxQueued: 3 });
    const first = fw.check(owner, check(1), 1);
    await tick();
    const queued = Array.from({ length: 3 }, () => fw.check(owner, check(1), 1));
    const over = fw.check(owner, check(1), 1);
    await expect(over).rejects.toBeInstanceOf(UnavailableError);
    await expect(over).rejects.toThrow(/maxQueued|3 parts/);
    f.releaseAll();
    await first;
    await tick();
    expect(f.calls).toHaveLength(2);
    expect(f.calls[1]!.checks).toHaveLength(3);
    f.releaseAll();
    expect(await Promise.all(queued)).toHaveLength(3);
  });

  it("a part whose deadline passed while queued is dropped unsent (never charged) and answered", async () => {
    const clock = new ManualClock(1_000);
    const f = fakePeer(echo);
    const fw = new BatchingForwarder({ peer: () => f.peer, maxInFlight: 1, queueMs: 500, clock });
    const first = fw.check(owner, check(1), 1);
    await tick();
    const stale = fw.check(owner, check(1), 1).catch((e: Error) => e);
    const staleEnvoy = fw
      .envoy(owner, { domain: "d", descriptors: [{ entries: [] }], hitsAddend: 0 }, 1)
      .catch((e: Error) => e);
    clock.advance(400);
    const fresh = fw.check(owner, check(2), 1);
    clock.advance(200); // the first two queued parts are now 600 ms old, the last 200 ms
    f.releaseAll();
    await first;
    await tick();
    expect(await stale).toBeInstanceOf(UnavailableError);
    expect(String(await stale)).toMatch(/deadline/);
    expect(await staleEnvoy).toBeInstanceOf(UnavailableError);
    expect(f.calls).toHaveLength(2);
    expect(f.calls[1]!.checks).toHaveLength(1);
    expect(f.calls[1]!.checks[0]!.items).toHaveLength(2);
    expect(f.calls[1]!.envoy).toHaveLength(0);
    f.releaseAll();
    expect((await fresh).results).toHaveLength(2);
  });

  it("a part whose caller's deadline passes while queued is dropped unsent, before the queue's own wait", async () => {
    const clock = new ManualClock(1_000);
    const f = fakePeer(echo);
    const fw = new BatchingForwarder({ peer: () => f.peer, maxInFlight: 1, queueMs: 2000, clock });
    const first = fw.check(owner, check(1), 1);
    await tick();
    // Its caller gives up 150 ms from now; the other queued part's caller has no deadline.
    const hurried = fw.check(owner, check(1), 1, clock.elapsed() + 150).catch((e: Error) => e);
    const hurriedEnvoy = fw
      .envoy(owner, { domain: "d", descriptors: [{ entries: [] }], hitsAddend: 0 }, 1, clock.elapsed() + 150)
      .catch((e: Error) => e);
    const patient = fw.check(owner, check(2), 1);
    clock.advance(200);
    f.releaseAll();
    await first;
    await tick();
    expect(await hurried).toBeInstanceOf(UnavailableError);
    expect(String(await hurried)).toMatch(/caller's deadline passed/);
    expect(await hurriedEnvoy).toBeInstanceOf(UnavailableError);
    // Only the patient part went in the second call: the hurried ones were never sent (never charged).
    expect(f.calls).toHaveLength(2);
    expect(f.calls[1]!.checks.map((c) => c.items.length)).toEqual([2]);
    expect(f.calls[1]!.envoy).toHaveLength(0);
    f.releaseAll();
    expect((await patient).results).toHaveLength(2);
  });

  it("a call holds at most maxItems items over its parts (the owner's maxForwardItems)", async () => {
    const f = fakePeer(echo);
    const fw = new BatchingForwarder({ peer: () => f.peer, maxInFlight: 4, maxItems: 5 });
    const parts = [fw.check(owner, check(3), 1), fw.check(owner, check(2), 1), fw.check(owner, check(4), 1)];
    await tick();
    expect(f.calls.map((c) => c.checks.map((p) => p.items.length))).toEqual([[3, 2], [4]]);
    f.releaseAll();
    expect((await Promise.all(parts)).map((r) => r.results.length)).toEqual([3, 2, 4]);
  });
});

describe("forwarding a settle by ticket", () => {
  it("goes in a call of its own and answers the owner's settle answer", async () => {
    const f = fakePeer((req) => ({
      ...echo(req),
      settles: (req.settles ?? []).map(() => ({ generation: 7, remaining: 5 })),
    }));
    const fw = new BatchingForwarder({ peer: () => f.peer });
    const p = fw.settle(owner, { key: "k", delta: 0, generation: 3, ticketId: "t", actual: [1] }, 3);
    await tick();
    f.releaseAll();
    expect(await p).toEqual({ generation: 7, remaining: 5 });
    expect(f.calls).toHaveLength(1);
    expect(f.calls[0]!.settles).toEqual([{ key: "k", delta: 0, generation: 3, ticketId: "t", actual: [1] }]);
    expect(f.calls[0]!.checks).toEqual([]);
  });

  it("a call lost after its resends fails as ForwardLostError; an owner without settles is unavailable", async () => {
    const lost = fakePeer(() => new Error("reset"));
    const fw = new BatchingForwarder({ peer: () => lost.peer, resends: 0 });
    const p = fw.settle(owner, { key: "k", delta: 0, generation: 3, ticketId: "t", actual: [1] }, 3);
    await tick();
    lost.releaseAll();
    await expect(p).rejects.toThrow(/forwarding to b:1 failed: reset/);
    const old = fakePeer(echo);
    const q = new BatchingForwarder({ peer: () => old.peer }).settle(
      owner,
      { key: "k", delta: 0, generation: 3 },
      3,
    );
    await tick();
    old.releaseAll();
    await expect(q).rejects.toBeInstanceOf(UnavailableError);
  });
});
