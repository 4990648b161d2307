import { status as GrpcStatus } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { InputLimitsSchema } from "../../src/protocol/input-limits.js";
import type { CheckResponse } from "../../src/protocol/messages.js";
import { requestedWait } from "../../src/server/check-waits.js";
import { callError, peek, startTestServer, T0, type TestServer, useTestServer } from "./harness.js";

/**
 * Check items with max_wait_ms over a real gRPC connection, on a virtual clock: the owner
 * answers when the units are there (the counter's retry time, exactly) or not allowed when the
 * wait runs out; FIFO per counter; a cancelled call frees its place.
 */

const CONFIG = `
domain: api
descriptors:
  - key: tb
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 10 }
  - key: fw
    rate_limit: { unit: minute, requests_per_unit: 10 }
`;

/** Real time for the server to take a call in (the clock is virtual, the sockets are not). */
const tick = (ms = 5) => new Promise<void>((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await tick();
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A call's outcome once it settles: its response, or its error. */
function track(p: Promise<CheckResponse>) {
  const t: { res: CheckResponse | undefined; err: { code?: number } | undefined; order: number } = {
    res: undefined,
    err: undefined,
    order: 0,
  };
  p.then(
    (r) => {
      t.res = r;
      t.order = ++settled;
    },
    (e: { code?: number }) => {
      t.err = e;
      t.order = ++settled;
    },
  );
  return t;
}
let settled = 0;

describe("Check with max_wait_ms over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  const waiting = () => t.server.checkWaits.size;

  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  /** Empties the 10/s bucket of `key` at the current time. */
  async function empty(key: string): Promise<void> {
    const r = await t.rpc.check({ items: [{ key, cost: 10 }] });
    expect(r.results[0]!.allowed).toBe(true);
  }

  it("answers at once, as a plain Check, when the units are there and nobody waits", async () => {
    clock.set(T0);
    const r = await t.rpc.check({ items: [{ key: "api/tb=now", cost: 3, maxWaitMs: 5000 }] });
    expect(r.results[0]).toMatchObject({ allowed: true, remaining: 7 });
    expect(waiting()).toBe(0);
  });

  it("answers allowed exactly when the token bucket has refilled the cost", async () => {
    clock.set(T0 + 10_000);
    await empty("api/tb=refill");
    const w = track(t.rpc.check({ items: [{ key: "api/tb=refill", cost: 2, maxWaitMs: 5000 }] }));
    await until("the call to wait", () => waiting() === 1);
    clock.advance(199); // 2 tokens at 10/s take 200 ms
    await tick(30);
    expect(w.res).toBeUndefined();
    clock.advance(1);
    await until("the answer", () => w.res !== undefined);
    expect(w.res!.results[0]).toMatchObject({ allowed: true });
    expect(waiting()).toBe(0);
    expect(peek(t, "api/tb=refill", clock.now())?.remaining).toBe(0);
  });

  it("answers not allowed at max_wait_ms, and charges nothing", async () => {
    clock.set(T0 + 60_000 + 1000); // a second into a minute: the window ends in 59 s
    const items = [{ key: "api/fw=out", cost: 10 }];
    expect((await t.rpc.check({ items })).results[0]!.allowed).toBe(true);
    const w = track(t.rpc.check({ items: [{ key: "api/fw=out", cost: 1, maxWaitMs: 500 }] }));
    await until("the call to wait", () => waiting() === 1);
    clock.advance(499);
    await tick(30);
    expect(w.res).toBeUndefined();
    clock.advance(1);
    await until("the answer", () => w.res !== undefined);
    expect(w.res!.results[0]).toMatchObject({ allowed: false });
    expect(w.res!.results[0]!.retryMs).toBeGreaterThan(50_000);
    expect(waiting()).toBe(0);
  });

  it("admits waiters in FIFO order: a cheaper later one does not pass the head", async () => {
    clock.set(T0 + 20_000);
    await empty("api/tb=fifo");
    const first = track(t.rpc.check({ items: [{ key: "api/tb=fifo", cost: 2, maxWaitMs: 5000 }] }));
    await until("the first to wait", () => waiting() === 1);
    const second = track(t.rpc.check({ items: [{ key: "api/tb=fifo", cost: 1, maxWaitMs: 5000 }] }));
    await until("the second to wait", () => waiting() === 2);
    clock.advance(100); // one token: enough for the second, not for the head
    await tick(30);
    expect(first.res).toBeUndefined();
    expect(second.res).toBeUndefined();
    clock.advance(100);
    await until("the first answer", () => first.res !== undefined);
    expect(first.res!.results[0]!.allowed).toBe(true);
    expect(second.res).toBeUndefined();
    clock.advance(100);
    await until("the second answer", () => second.res !== undefined);
    expect(second.res!.results[0]!.allowed).toBe(true);
    expect(first.order).toBeLessThan(second.order);
  });

  it("a cancelled call frees its place: the next waiter gets the units", async () => {
    clock.set(T0 + 30_000);
    await empty("api/tb=cancel");
    const ac = new AbortController();
    const gone = track(
      t.rpc.check({ items: [{ key: "api/tb=cancel", cost: 1, maxWaitMs: 5000 }] }, { signal: ac.signal }),
    );
    await until("the first to wait", () => waiting() === 1);
    const next = track(t.rpc.check({ items: [{ key: "api/tb=cancel", cost: 1, maxWaitMs: 5000 }] }));
    await until("the second to wait", () => waiting() === 2);
    ac.abort();
    await until("the server to see the cancel", () => waiting() === 1);
    expect(gone.err?.code).toBe(GrpcStatus.CANCELLED);
    clock.advance(100);
    await until("the answer", () => next.res !== undefined);
    expect(next.res!.results[0]!.allowed).toBe(true);
    // Only the one unit was charged.
    expect(peek(t, "api/tb=cancel", clock.now())?.remaining).toBe(0);
    clock.advance(100);
    expect(peek(t, "api/tb=cancel", clock.now())?.remaining).toBe(1);
  });

  it("waits no longer than the call's deadline allows: answered before it", async () => {
    clock.set(T0 + 120_000 + 1000); // the minute's window ends in 59 s
    await t.rpc.check({ items: [{ key: "api/fw=deadline", cost: 10 }] });
    const w = track(
      t.rpc.check({ items: [{ key: "api/fw=deadline", cost: 1, maxWaitMs: 30_000 }] }, { deadlineMs: 2000 }),
    );
    await until("the call to wait", () => waiting() === 1);
    // The wait was cut to the deadline less a margin (under 2000 ms of this virtual clock).
    clock.advance(1950);
    await until("the answer", () => w.res !== undefined || w.err !== undefined);
    expect(w.err).toBeUndefined();
    expect(w.res!.results[0]!.allowed).toBe(false);
  });

  it("refuses a max_wait_ms over the maximum naming the field, and changes nothing", async () => {
    clock.set(T0 + 50_000);
    const key = "api/tb=bad";
    for (const bad of [30_001, 4_000_000_000, -1]) {
      const err = await callError(
        t.rpc.check({
          items: [
            { key, cost: 1 },
            { key, cost: 1, maxWaitMs: bad },
          ],
        }),
      );
      expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
      expect(err.details).toMatch(/items\[1\]\.max_wait_ms .* maxCheckWaitMs 30000/);
    }
    expect(peek(t, key, clock.now())?.remaining).toBe(10);
    expect(waiting()).toBe(0);
  });

  it("shows waiting checks in /metrics: how many wait now, and their durations apart from Check's", async () => {
    clock.set(T0 + 70_000);
    await empty("api/tb=metrics");
    const w = track(t.rpc.check({ items: [{ key: "api/tb=metrics", cost: 1, maxWaitMs: 5000 }] }));
    await until("the call to wait", () => waiting() === 1);
    const during = await (await fetch(`${t.httpUrl}/metrics`)).text();
    expect(during).toMatch(/^shardlimit_check_waiting 1$/m);
    clock.advance(100);
    await until("the answer", () => w.res !== undefined);
    const after = await (await fetch(`${t.httpUrl}/metrics`)).text();
    expect(after).toMatch(/^shardlimit_check_waiting 0$/m);
    expect(after).toMatch(
      /shardlimit_request_duration_seconds_count\{method="CheckWaiting",code="OK"\} [1-9]/,
    );
  });

  it("checks max_wait_ms in a request object: NaN, negative and huge are refused by name", () => {
    const req = (v: number) => ({
      items: [{ key: "api/tb=x", cost: 1, maxWaitMs: v }],
      atomic: false,
      generation: 0,
    });
    expect(() => requestedWait(req(Number.NaN), 30_000)).toThrow(/items\[0\]\.max_wait_ms is not a number/);
    expect(() => requestedWait(req(-5), 30_000)).toThrow(/items\[0\]\.max_wait_ms is negative/);
    expect(() => requestedWait(req(Number.POSITIVE_INFINITY), 30_000)).toThrow(InvalidArgumentError);
    expect(requestedWait(req(0), 30_000)).toBe(0);
    expect(requestedWait(req(1000), 30_000)).toBe(1000);
  });
});

describe("Check with max_wait_ms: bounds", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);

  beforeAll(async () => {
    t = await startTestServer(CONFIG, {
      clock,
      limits: InputLimitsSchema.parse({ maxCheckWaitersPerKey: 1, maxCheckWaiters: 2 }),
    });
  });
  afterAll(async () => {
    await t.stop();
  });

  it("refuses waiters past the bound per key and per server with RESOURCE_EXHAUSTED", async () => {
    for (const k of ["a", "b", "c"]) await t.rpc.check({ items: [{ key: `api/tb=${k}`, cost: 10 }] });
    const w = (k: string) => t.rpc.check({ items: [{ key: `api/tb=${k}`, cost: 1, maxWaitMs: 1000 }] });
    const first = track(w("a"));
    await until("the first to wait", () => t.server.checkWaits.size === 1);
    const perKey = await callError(w("a"));
    expect(perKey.code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(perKey.details).toMatch(/maxCheckWaitersPerKey/);
    const second = track(w("b"));
    await until("the second to wait", () => t.server.checkWaits.size === 2);
    const perServer = await callError(w("c"));
    expect(perServer.code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(perServer.details).toMatch(/maxCheckWaiters\b/);
    clock.advance(100);
    await until("the answers", () => first.res !== undefined && second.res !== undefined);
    expect(first.res!.results[0]!.allowed).toBe(true);
    expect(second.res!.results[0]!.allowed).toBe(true);
  });
});
