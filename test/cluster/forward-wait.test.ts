import { describe, expect, it } from "vitest";
import { BatchingForwarder } from "../../src/cluster/forwarder.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { compileSources } from "../../src/config/load.js";
import { ManualClock, systemClock } from "../../src/core/clock.js";
import type { CheckResponse, ForwardRequest } from "../../src/protocol/messages.js";
import { type CallLike, CheckWaits } from "../../src/server/check-waits.js";
import type { Ownership } from "../../src/server/ownership.js";
import { PeerService } from "../../src/server/peer-service.js";
import { Router } from "../../src/server/router.js";
import { FakeOwnership, fakeServer } from "./forward-fakes.js";

/**
 * A waiting Check reaching a server that does not own its key: forwarded to the owner in a
 * Forward call of its own whose deadline outlasts the wait, waited for there, and answered before
 * the forwarding server's own caller gives up.
 */

const config = compileSources([
  {
    file: "r.yaml",
    text: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 10 }\n",
  },
]);

function server(clock: ManualClock, ownership: Ownership) {
  const { limiter, envoy } = fakeServer(config, clock, ownership);
  const waits = new CheckWaits(
    { clock, maxWaitMs: 30_000, maxPerKey: 100, maxTotal: 100 },
    { check: (r) => limiter.check(r), counterKeys: (r) => limiter.counterKeys(r) },
  );
  return { limiter, envoy, waits };
}

/** A gRPC call with a deadline `ms` of real time from now, never cancelled. */
function callWithin(ms: number): CallLike {
  const at = systemClock.now() + ms;
  return { getDeadline: () => at, once: () => undefined, removeListener: () => undefined };
}

const tick = () => new Promise<void>((r) => setTimeout(r, 5));

function setup() {
  const clock = new ManualClock(Date.UTC(2030, 0, 1));
  const b = server(clock, new FakeOwnership());
  const owner = new PeerService({
    limiter: b.limiter,
    envoy: b.envoy,
    ownership: new FakeOwnership(),
    receiveHandoff: () => ({ accepted: 0, generation: 3 }),
    clock,
    waits: b.waits,
  });
  const sent: { req: ForwardRequest; deadlineMs: number | undefined }[] = [];
  const peer: Pick<PeerRpc, "forward"> = {
    forward(req, opts) {
      sent.push({ req: req as ForwardRequest, deadlineMs: opts?.deadlineMs });
      return owner.forward(req as ForwardRequest, callWithin(opts?.deadlineMs ?? 2000));
    },
  };
  const entry = new FakeOwnership(new Set(["d/k=w", "d/k=quick"]));
  const a = server(clock, entry);
  const router = new Router({
    limiter: a.limiter,
    envoy: a.envoy,
    ownership: entry,
    clock: systemClock,
    forwarder: new BatchingForwarder({ peer: () => peer, clock: systemClock, deadlineMs: 2000 }),
    waits: a.waits,
  });
  return { clock, b, router, sent };
}

const check = (key: string, cost: number, maxWaitMs = 0) => ({
  items: [{ key, cost, ...(maxWaitMs ? { maxWaitMs } : {}) }],
  atomic: false,
  generation: 3,
});

describe("a waiting Check forwarded to its owner", () => {
  it("waits at the owner, in a call of its own whose deadline outlasts the wait", async () => {
    const { clock, b, router, sent } = setup();
    await router.check(check("d/k=w", 10));
    let answer: CheckResponse | undefined;
    void Promise.resolve(router.check(check("d/k=w", 1, 5000), callWithin(10_000))).then((r) => {
      answer = r;
    });
    for (let i = 0; i < 100 && b.waits.size === 0; i++) await tick();
    expect(b.waits.size).toBe(1);
    const waitingCall = sent.at(-1)!;
    expect(waitingCall.req.checks).toHaveLength(1);
    expect(waitingCall.deadlineMs).toBe(2000 + 5000);
    // A check without a wait is not held back behind it.
    const quick = await router.check(check("d/k=quick", 1));
    expect(quick.results[0]!.allowed).toBe(true);
    expect(answer).toBeUndefined();
    clock.advance(100);
    for (let i = 0; i < 100 && answer === undefined; i++) await tick();
    expect(answer?.results[0]).toMatchObject({ allowed: true });
  });

  it("is cut to the forwarding server's own deadline before it is forwarded", async () => {
    const { b, router, sent } = setup();
    await router.check(check("d/k=w", 10));
    void router.check(check("d/k=w", 1, 20_000), callWithin(1000));
    for (let i = 0; i < 100 && b.waits.size === 0; i++) await tick();
    const forwarded = sent.at(-1)!.req.checks[0]!.items[0]!.maxWaitMs!;
    expect(forwarded).toBeGreaterThan(800);
    expect(forwarded).toBeLessThanOrEqual(950);
    b.waits.close();
  });

  it("a bad max_wait_ms is refused by the forwarding server, nothing forwarded", () => {
    const { router, sent } = setup();
    expect(() => router.check(check("d/k=w", 1, 40_000))).toThrow(/items\[0\]\.max_wait_ms .*maxCheckWaitMs/);
    expect(sent).toHaveLength(0);
  });
});
