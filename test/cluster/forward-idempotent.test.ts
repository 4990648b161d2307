import { describe, expect, it } from "vitest";
import { BatchingForwarder } from "../../src/cluster/forwarder.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { compileSources } from "../../src/config/load.js";
import { DEFAULT_MAX_CLIENTS_PER_KEY } from "../../src/core/clients.js";
import { ManualClock, systemClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { ShardlimitError } from "../../src/core/errors.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { EnvoyRequest, ForwardRequest, ForwardResponse } from "../../src/protocol/messages.js";
import type { Ownership } from "../../src/server/ownership.js";
import { PeerService } from "../../src/server/peer-service.js";
import { ForwardExpiredError, type Forwarder, Router } from "../../src/server/router.js";
import { FakeOwnership, fakeServer } from "./forward-fakes.js";

const config = compileSources([
  {
    file: "r.yaml",
    text: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 100 }\n",
  },
]);

/** A server's request path on `engine`: what the owner of a forwarded part runs. */
function server(clock: ManualClock, ownership: Ownership, engine = new Engine()) {
  return fakeServer(config, clock, ownership, engine);
}

/** The owner's side of Forward over `b`'s request path. */
function peerService(b: ReturnType<typeof server>, clock: ManualClock) {
  return new PeerService({
    limiter: b.limiter,
    envoy: b.envoy,
    ownership: new FakeOwnership(),
    receiveHandoff: () => ({ accepted: 0, generation: 3 }),
    clock,
  });
}

/**
 * A channel to the owner's PeerService that loses the answers of the first `lose` calls after the
 * owner has applied them (as a deadline that expires while the answer is on its way).
 */
function lossyPeer(owner: PeerService, lose: number) {
  const calls: ForwardRequest[] = [];
  const peer: Pick<PeerRpc, "forward"> = {
    async forward(req) {
      calls.push(req as ForwardRequest);
      // Through the wire codec's shapes: the owner sees what protobufjs would decode.
      const res: ForwardResponse = await owner.forward(req as ForwardRequest);
      if (calls.length <= lose) throw new Error("4 DEADLINE_EXCEEDED: Deadline exceeded");
      return res;
    },
  };
  return { peer, calls };
}

const envoyReq = (value: string, hits = 1): EnvoyRequest => ({
  domain: "d",
  hitsAddend: hits,
  descriptors: [{ entries: [{ key: "k", value }] }],
});

/**
 * Entry server a forwarding key d/k=b1 to its owner b over a wire that loses the first `lose`
 * answers; the forwarder resends after 1 ms, the router retries after 5 ms.
 */
function throughLossyWire(lose: number) {
  const clock = new ManualClock(Date.UTC(2030, 0, 1));
  const b = server(clock, new FakeOwnership());
  const owner = new PeerService({
    limiter: b.limiter,
    envoy: b.envoy,
    ownership: new FakeOwnership(),
    receiveHandoff: () => ({ accepted: 0, generation: 3 }),
    clock,
  });
  const wire = lossyPeer(owner, lose);
  const entryOwnership = new FakeOwnership(new Set(["d/k=b1"]));
  const a = server(clock, entryOwnership);
  const router = new Router({
    limiter: a.limiter,
    envoy: a.envoy,
    ownership: entryOwnership,
    clock: systemClock,
    forwarder: new BatchingForwarder({ peer: () => wire.peer, resendMs: 1, clock: systemClock }),
    retryWaitMs: 5,
  });
  return { b, wire, router };
}

describe("forwarded parts are applied once", () => {
  it("a Forward whose answer is lost is sent again and charged once", async () => {
    const { b, wire, router } = throughLossyWire(1);
    const res = await router.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: false, generation: 3 });
    expect(wire.calls.length).toBe(2);
    expect(res.results[0]).toMatchObject({ allowed: true, remaining: 99 });
    // The owner's counter: charged by the first call only (the second got the remembered answer).
    const after = b.limiter.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: false, generation: 3 });
    expect(after.results[0]!.remaining).toBe(98);
  });

  it("a part whose every send lost its answer is not sent to that owner again under a new id", async () => {
    const { b, wire, router } = throughLossyWire(1000);
    const res = await router.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: false, generation: 3 });
    // One call and its two resends, all with the same part id; no retry by the router.
    expect(wire.calls.map((c) => c.checkIds)).toEqual([[1], [1], [1]]);
    expect(res.results[0]!.error?.code).toBe(ErrorCode.OWNER_UNAVAILABLE);
    const after = b.limiter.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: false, generation: 3 });
    expect(after.results[0]!.remaining).toBe(98);
    await expect(router.shouldRateLimit(envoyReq("b1"))).rejects.toThrow("DEADLINE_EXCEEDED");
    const after2 = b.limiter.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: false, generation: 3 });
    expect(after2.results[0]!.remaining).toBe(96);
  });

  it("one part hitting COUNTERS_EXHAUSTED gets its own error; the batch's other parts are charged once and answered", async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const b = server(clock, new FakeOwnership(), new Engine({ maxCounters: 2 }));
    const owner = peerService(b, clock);
    const wire = lossyPeer(owner, 0);
    const fw = new BatchingForwarder({ peer: () => wire.peer });
    const to = { id: "b", address: "b:1", self: false };
    // One micro-batch: x and y take the owner's two counters, z finds none left, x again.
    const parts = [
      fw.envoy(to, envoyReq("x"), 3),
      fw.envoy(to, envoyReq("y"), 3),
      fw.envoy(to, envoyReq("z"), 3),
      fw.envoy(to, envoyReq("x", 2), 3),
    ].map((p) =>
      p.then(
        (r) => r,
        (e: Error) => e,
      ),
    );
    const [x, y, z, x2] = await Promise.all(parts);
    expect(wire.calls.length).toBe(1);
    expect(x).toMatchObject({ overallCode: 1, statuses: [{ limitRemaining: 99 }] });
    expect(y).toMatchObject({ overallCode: 1, statuses: [{ limitRemaining: 99 }] });
    expect(z).toBeInstanceOf(ShardlimitError);
    expect((z as ShardlimitError).code).toBe("COUNTERS_EXHAUSTED");
    expect(x2).toMatchObject({ overallCode: 1, statuses: [{ limitRemaining: 97 }] });
    // Each charged once at the owner: x 1 + 2, y 1 (and this check takes 1 more of each).
    const left = b.limiter.check({
      items: [
        { key: "d/k=x", cost: 1 },
        { key: "d/k=y", cost: 1 },
      ],
      atomic: false,
      generation: 3,
    });
    expect(left.results.map((r) => r.remaining)).toEqual([96, 98]);
  });
});

describe("Forward and Handoff requests are bounded (issue 11, hole 5)", () => {
  const limits = { ...DEFAULT_INPUT_LIMITS, maxBatch: 3, maxForwardItems: 5, maxHandoffCounters: 2 };
  const setup = () => {
    const clock = new ManualClock(1_000_000);
    const b = server(clock, new FakeOwnership());
    let handoffs = 0;
    const svc = new PeerService({
      limiter: b.limiter,
      envoy: b.envoy,
      ownership: new FakeOwnership(),
      receiveHandoff: () => {
        handoffs++;
        return { accepted: 0, generation: 3 };
      },
      clock,
      limits,
    });
    return { b, svc, clock, handoffs: () => handoffs };
  };
  const part = (n: number) => ({
    items: Array.from({ length: n }, () => ({ key: "d/k=x", cost: 1 })),
    atomic: false,
    generation: 3,
  });

  it("a Forward with more parts than maxBatch is refused whole, naming the bound; nothing charged", async () => {
    const { b, svc } = setup();
    const req = { generation: 3, envoy: [envoyReq("x")], checks: [part(1), part(1), part(1)] };
    await expect(svc.forward(req)).rejects.toThrow(/4 parts.*maxBatch 3/);
    expect(b.engine.size).toBe(0);
  });

  it("a Forward whose parts hold more items than maxForwardItems is refused whole; nothing charged", async () => {
    const { b, svc } = setup();
    const req = { generation: 3, envoy: [], checks: [part(3), part(3)] };
    await expect(svc.forward(req)).rejects.toThrow(/6 items.*maxForwardItems 5/);
    expect(b.engine.size).toBe(0);
  });

  it("a Forward's sender id is bounded by maxIdLength (it is kept in the memory of answered parts)", async () => {
    const { svc } = setup();
    const req = { generation: 3, envoy: [], checks: [part(1)], sender: "s".repeat(300), checkIds: [1] };
    await expect(svc.forward(req)).rejects.toThrow(/sender.*256/);
  });

  it("a Handoff past maxHandoffCounters, or with a counter over the clients or leases bounds, is refused unapplied", () => {
    const { svc, handoffs } = setup();
    // A counter of the receiver's config (a handed-over counter is checked against its rules).
    const counter = (clients: number, leases: number) => ({
      key: "d/k=1",
      shard: "d/k=1",
      algorithm: "fixed_window",
      tRelMs: 0,
      x: 0,
      y: 0,
      expiresInMs: 1000,
      leases: Array.from({ length: leases }, (_, i) => ({ id: `l${i}`, amount: 1, expiresInMs: 1000 })),
      clients: Array.from({ length: clients }, (_, i) => ({ id: `c${i}`, demand: 1, held: 0, seenMsAgo: 0 })),
    });
    const req = (counters: ReturnType<typeof counter>[]) => ({
      generation: 3,
      from: "a",
      ranges: [],
      counters,
      done: true,
    });
    expect(() => svc.handoff(req([counter(0, 0), counter(0, 0), counter(0, 0)]))).toThrow(
      /3 counters.*maxHandoffCounters 2/,
    );
    expect(() => svc.handoff(req([counter(DEFAULT_MAX_CLIENTS_PER_KEY + 1, 0)]))).toThrow(/clients/);
    expect(() => svc.handoff(req([counter(0, DEFAULT_INPUT_LIMITS.maxLeasesPerKey + 1)]))).toThrow(/leases/);
    expect(handoffs()).toBe(0);
    svc.handoff(req([counter(2, 2)]));
    expect(handoffs()).toBe(1);
  });
});

describe("a part dropped unsent at its queue deadline is answered at once, not tried again", () => {
  const setup = () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const ownership = new FakeOwnership(new Set(["d/k=b1"]));
    const a = server(clock, ownership);
    let calls = 0;
    const expired = () => {
      calls++;
      return Promise.reject(new ForwardExpiredError("waited over 2000 ms to be forwarded to b:1"));
    };
    const forwarder: Forwarder = { check: expired, envoy: expired };
    const router = new Router({ ...a, ownership, clock: systemClock, forwarder, retryWaitMs: 5 });
    return { router, calls: () => calls };
  };

  it("Check: the item gets OWNER_UNAVAILABLE after one try", async () => {
    const { router, calls } = setup();
    const res = await router.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: false, generation: 3 });
    expect(res.results[0]!.error?.code).toBe(ErrorCode.OWNER_UNAVAILABLE);
    expect(calls()).toBe(1);
    const atomic = await router.check({ items: [{ key: "d/k=b1", cost: 1 }], atomic: true, generation: 3 });
    expect(atomic.results[0]!.error?.code).toBe(ErrorCode.OWNER_UNAVAILABLE);
    expect(calls()).toBe(2);
  });

  it("ShouldRateLimit: UNAVAILABLE after one try", async () => {
    const { router, calls } = setup();
    await expect(Promise.resolve(router.shouldRateLimit(envoyReq("b1")))).rejects.toThrow(/forwarded/);
    expect(calls()).toBe(1);
  });
});
