import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import { ManualClock, systemClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { InvalidArgumentError, NotOwnerError, UnavailableError } from "../../src/core/errors.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { CheckRequest, EnvoyRequest } from "../../src/protocol/messages.js";
import { EnvoyRateLimit } from "../../src/server/envoy.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import type { Owner, Ownership, OwnershipVerdict } from "../../src/server/ownership.js";
import { type Forwarder, Router } from "../../src/server/router.js";

const config = compileSources([
  {
    file: "r.yaml",
    text: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 100 }\n",
  },
]);

/** Ownership by key name: `owners` maps a shard key to "self", a peer id, or "self-not-ready". */
class FakeOwnership implements Ownership {
  gen = 3;
  owners = new Map<string, string>();
  private waiters: (() => void)[] = [];
  generation() {
    return this.gen;
  }
  private who(shardKey: string) {
    return this.owners.get(shardKey) ?? "self";
  }
  check(shardKey: string): OwnershipVerdict {
    const w = this.who(shardKey);
    return w === "self" ? "own" : w === "self-not-ready" ? "not_ready" : "not_owner";
  }
  ownerOf(shardKey: string): Owner {
    const w = this.who(shardKey);
    const self = w.startsWith("self");
    return { id: self ? "a" : w, address: `${self ? "a" : w}:1`, self };
  }
  changed(ms: number) {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        r();
      });
    });
  }
  bump(mutate: () => void) {
    mutate();
    for (const w of this.waiters.splice(0)) w();
  }
  view() {
    return { generation: this.gen, members: [], slices: [], standalone: false };
  }
}

function setup() {
  const clock = new ManualClock(Date.UTC(2030, 0, 1));
  const ownership = new FakeOwnership();
  const deps = { engine: new Engine(), clock, ownership, limits: DEFAULT_INPUT_LIMITS, metrics: noopMetrics };
  const limiter = new Limiter({ ...deps, config });
  const envoy = new EnvoyRateLimit(
    deps,
    (domain, entries) => config.resolve(domain, entries),
    (domain) => config.domains.includes(domain),
  );
  // Each peer is a Limiter of its own: what a forwarded part would get from its owner.
  const peers = new Map<string, { limiter: Limiter; envoy: EnvoyRateLimit }>();
  const peer = (id: string) => {
    let p = peers.get(id);
    if (!p) {
      const o = new FakeOwnership();
      const d = {
        engine: new Engine(),
        clock,
        ownership: o,
        limits: DEFAULT_INPUT_LIMITS,
        metrics: noopMetrics,
      };
      p = {
        limiter: new Limiter({ ...d, config }),
        envoy: new EnvoyRateLimit(
          d,
          (dm, e) => config.resolve(dm, e),
          () => true,
        ),
      };
      peers.set(id, p);
    }
    return p;
  };
  const calls: { owner: string; kind: string; n: number }[] = [];
  /** The `until` each forwarded part was given (when its caller stops waiting). */
  const untils: (number | undefined)[] = [];
  let fail: Error | undefined;
  const forwarder: Forwarder = {
    async check(owner, req, _generation, until) {
      calls.push({ owner: owner.id, kind: "check", n: req.items.length });
      untils.push(until);
      if (fail) throw fail;
      return peer(owner.id).limiter.check(req);
    },
    async envoy(owner, req, _generation, until) {
      calls.push({ owner: owner.id, kind: "envoy", n: req.descriptors.length });
      untils.push(until);
      if (fail) throw fail;
      return peer(owner.id).envoy.shouldRateLimit(req);
    },
    async settle(owner, req) {
      calls.push({ owner: owner.id, kind: "settle", n: req.actual?.length ?? 0 });
      if (fail) throw fail;
      return peer(owner.id).limiter.settle(req);
    },
  };
  // The fake ownership's `changed` waits in real time, so the router's waits run on the system clock.
  const router = new Router({ limiter, envoy, ownership, clock: systemClock, forwarder, retryWaitMs: 50 });
  return { router, ownership, limiter, calls, untils, peer, setFail: (e: Error | undefined) => (fail = e) };
}

const check = (keys: string[], atomic = false): CheckRequest => ({
  items: keys.map((key) => ({ key, cost: 1 })),
  atomic,
  generation: 3,
});

describe("routing Check and ShouldRateLimit to owners", () => {
  it("decides local keys here, sends each owner's keys in one part, and answers in order", async () => {
    const { router, ownership, calls } = setup();
    ownership.owners.set("d/k=b1", "b").set("d/k=b2", "b").set("d/k=c1", "c");
    const res = await router.check(check(["d/k=a1", "d/k=b1", "d/k=c1", "d/k=b2", "d/k=a1"]));
    expect(res.results.map((r) => r.remaining)).toEqual([99, 99, 99, 99, 98]);
    expect(calls).toEqual([
      { owner: "b", kind: "check", n: 2 },
      { owner: "c", kind: "check", n: 1 },
    ]);
  });

  it("a forwarded part carries its caller's deadline (less the answer's margin), so it is never sent after the caller gave up", async () => {
    const { router, ownership, untils } = setup();
    ownership.owners.set("d/k=b1", "b").set("d/k=c1", "c");
    const call = {
      getDeadline: () => Date.now() + 300,
      once: () => undefined,
      removeListener: () => undefined,
    };
    const before = systemClock.elapsed();
    await router.check(check(["d/k=b1", "d/k=c1"]), call);
    await router.shouldRateLimit(
      { domain: "d", descriptors: [{ entries: [{ key: "k", value: "b1" }] }], hitsAddend: 1 },
      call,
    );
    await router.check(check(["d/k=b1"])); // no deadline: none passed on
    const after = systemClock.elapsed();
    expect(untils).toHaveLength(4);
    for (const u of untils.slice(0, 3)) {
      expect(u).toBeGreaterThanOrEqual(before + 300 - 50 - 5);
      expect(u).toBeLessThanOrEqual(after + 300 - 50 + 5);
    }
    expect(untils[3]).toBeUndefined();
  });

  it("stays synchronous when every key is local", () => {
    const { router } = setup();
    const res = router.check(check(["d/k=x"]));
    expect(res).not.toBeInstanceOf(Promise);
  });

  it("an atomic check goes whole to its one owner, and is refused when it spans owners", async () => {
    const { router, ownership, calls } = setup();
    ownership.owners.set("d/k=b1", "b").set("d/k=b2", "b").set("d/k=c1", "c");
    const res = await router.check(check(["d/k=b1", "d/k=b2"], true));
    expect(res.results.map((r) => r.allowed)).toEqual([true, true]);
    expect(calls).toEqual([{ owner: "b", kind: "check", n: 2 }]);
    expect(() => router.check(check(["d/k=b1", "d/k=c1"], true))).toThrow(InvalidArgumentError);
  });

  it("a key whose slice is being handed over here is decided once the handoff is in", async () => {
    const { router, ownership } = setup();
    ownership.owners.set("d/k=h", "self-not-ready");
    const p = router.check(check(["d/k=h", "d/k=x"]));
    expect(p).toBeInstanceOf(Promise);
    ownership.bump(() => ownership.owners.set("d/k=h", "self"));
    expect((await p).results.map((r) => r.remaining)).toEqual([99, 99]);
  });

  it("a handoff slower than three tries: a caller with seconds to wait gets its answer, one without a deadline an error", async () => {
    const { router, ownership } = setup();
    ownership.owners.set("d/k=h", "self-not-ready");
    const patient = router.check(check(["d/k=h"]), {
      getDeadline: () => Date.now() + 3000,
      once: () => undefined,
      removeListener: () => undefined,
    });
    const hasty = router.check(check(["d/k=h"]));
    // Six waits of 50 ms: the call without a deadline gave up after its three tries.
    await new Promise((r) => setTimeout(r, 300));
    ownership.bump(() => ownership.owners.set("d/k=h", "self"));
    expect((await hasty).results[0]!.error?.code).toBe(ErrorCode.SLICE_NOT_READY);
    // Before: failed as the hasty one, though its caller would wait three seconds.
    expect((await patient).results[0]).toMatchObject({ allowed: true, remaining: 99 });
  });

  it("when the owner answers not-owner, it tries again after the assignment changes", async () => {
    const { router, ownership, setFail } = setup();
    ownership.owners.set("d/k=m", "b");
    setFail(new NotOwnerError("moved", 4));
    const p = router.check(check(["d/k=m"]));
    await new Promise((r) => setTimeout(r, 5));
    setFail(undefined);
    ownership.bump(() => {
      ownership.gen = 4;
      ownership.owners.set("d/k=m", "self");
    });
    const res = await p;
    expect(res.results[0]).toMatchObject({ allowed: true, remaining: 99 });
    expect(res.generation).toBe(4);
  });

  it("an unreachable owner yields a per-item OWNER_UNAVAILABLE after the last try", async () => {
    const { router, ownership, setFail } = setup();
    ownership.owners.set("d/k=u", "b");
    setFail(new UnavailableError("connection refused"));
    const res = await router.check(check(["d/k=u", "d/k=x"]));
    expect(res.results[0]!.error?.code).toBe(ErrorCode.OWNER_UNAVAILABLE);
    expect(res.results[1]!.remaining).toBe(99);
  });

  it("ShouldRateLimit charges each descriptor at its owner with its own hits, and merges the statuses", async () => {
    const { router, ownership, calls, setFail } = setup();
    ownership.owners.set("d/k=b1", "b");
    const req: EnvoyRequest = {
      domain: "d",
      hitsAddend: 5,
      descriptors: [
        { entries: [{ key: "k", value: "a1" }] },
        { entries: [{ key: "k", value: "b1" }], hitsAddend: { value: 7 } },
        { entries: [{ key: "none", value: "z" }] },
      ],
    };
    const res = await router.shouldRateLimit(req);
    expect(res.statuses.map((s) => s.limitRemaining ?? 0)).toEqual([95, 93, 0]);
    expect(calls).toEqual([{ owner: "b", kind: "envoy", n: 1 }]);
    setFail(new UnavailableError("down"));
    await expect(router.shouldRateLimit(req)).rejects.toBeInstanceOf(UnavailableError);
  });

  it("a request routed with a newer generation waits until this server has it", async () => {
    const { router, ownership } = setup();
    const handler = router.caughtUp(
      (req: { generation: number }) => ownership.generation() + req.generation * 0,
    );
    expect(handler({ generation: 3 })).toBe(3);
    const p = handler({ generation: 5 });
    ownership.bump(() => {
      ownership.gen = 5;
    });
    expect(await p).toBe(5);
  });

  it("a request naming a generation this server cannot confirm is not decided on its old view", async () => {
    const { router, ownership, limiter } = setup();
    // Routed with generation 5; this server stays at 3 through every wait: NOT_OWNER, nothing counted.
    const res = await router.check({ ...check(["d/k=stale"]), generation: 5 });
    expect(res.results[0]!.error?.code).toBe(ErrorCode.NOT_OWNER);
    expect(res.results[0]!.error?.message).toBe(
      "this server has not confirmed generation 5 yet (it serves generation 3)",
    );
    const report = router.caughtUp(limiter.reportAndGetPolicy.bind(limiter));
    const ans = await report({
      clientId: "g",
      seq: 1,
      generation: 5,
      intervalMs: 100,
      keyEpoch: 0,
      entries: [{ key: "d/k=stale", admitted: 7, rejected: 0, held: 0, windowAdmitted: 7 }],
    });
    expect(ans.policies[0]!.error?.code).toBe(ErrorCode.NOT_OWNER);
    // On the generation it has, the key is untouched.
    expect((await router.check(check(["d/k=stale"]))).results[0]!.remaining).toBe(99);
    expect(ownership.generation()).toBe(3);
  });
});

describe("routing Settle by ticket to the ticket's owner", () => {
  it("a ticket issued by a forwarded Check is settled at its owner, once", async () => {
    const { router, ownership, calls, peer } = setup();
    ownership.owners.set("d/k=t", "b");
    const res = await router.check({
      items: [{ key: "d/k=t", cost: 40, ticket: true }],
      atomic: false,
      generation: 3,
    });
    const ticketId = res.results[0]!.ticketId!;
    expect(ticketId).toBeTruthy();
    const settle = { key: "d/k=t", delta: 0, generation: 3, ticketId, actual: [10] };
    const first = await router.settle(settle);
    expect(first).toMatchObject({ remaining: 90, limit: 100 });
    expect(await router.settle(settle)).toMatchObject({ remaining: 90, alreadySettled: true });
    expect(calls.filter((c) => c.kind === "settle").map((c) => c.owner)).toEqual(["b", "b"]);
    const now = peer("b").limiter;
    expect(
      now.check({ items: [{ key: "d/k=t", cost: 90 }], atomic: false, generation: 3 }).results[0]!.allowed,
    ).toBe(true);
  });

  it("a settle by key and delta, or for a key this server owns, is answered here", async () => {
    const { router, calls } = setup();
    const res = await router.check({
      items: [{ key: "d/k=here", cost: 5, ticket: true }],
      atomic: false,
      generation: 3,
    });
    const s = await router.settle({
      key: "d/k=here",
      delta: 0,
      generation: 3,
      ticketId: res.results[0]!.ticketId!,
      actual: [1],
    });
    expect(s).toMatchObject({ remaining: 99 });
    expect(await router.settle({ key: "d/k=here", delta: 1, generation: 3 })).toMatchObject({
      remaining: 98,
    });
    expect(calls).toEqual([]);
  });

  it("an owner that cannot be reached is OWNER_UNAVAILABLE; a ticket unknown at the owner is UNKNOWN_TICKET", async () => {
    const { router, ownership, setFail } = setup();
    ownership.owners.set("d/k=u", "b");
    const unknown = await router.settle({
      key: "d/k=u",
      delta: 0,
      generation: 3,
      ticketId: "nope",
      actual: [1],
    });
    expect(unknown.error?.code).toBe(ErrorCode.UNKNOWN_TICKET);
    setFail(new UnavailableError("down"));
    const down = await router.settle({
      key: "d/k=u",
      delta: 0,
      generation: 3,
      ticketId: "nope",
      actual: [1],
    });
    expect(down.error?.code).toBe(ErrorCode.OWNER_UNAVAILABLE);
  });
});
