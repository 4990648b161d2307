import { describe, expect, it } from "vitest";
import type { GatewayLimiterOptions } from "../../src/client/gateway-limiter.js";
import { CapacityError } from "../../src/core/decision.js";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { entryKey, startGateway } from "../../src/testkit/fake-transport.js";

/**
 * `GatewayLimiter.wait`: blocking acquisition on the gateway, FIFO per counter, woken by the
 * owner's policies, on a virtual clock. `api/strict` is a fixed window of 10/s with no optimistic
 * allowance; `api/tenant` a token bucket of 100/s.
 */

const STRICT = "api/strict=1";

function setup(opts: Partial<GatewayLimiterOptions> = {}) {
  const g = startGateway({ opts });
  g.run(10);
  expect(g.limiter.ready).toBe(true);
  return g;
}

/** Lets promise callbacks run (the virtual clock fires timers synchronously). */
const settle = () => new Promise<void>((r) => setImmediate(r));

/**
 * Spends what the strict key admits in the current second: requests until the owner's policy
 * rejects them (a far-from-full key is first given ALLOW for a few intervals).
 */
function exhaust(g: ReturnType<typeof setup>, key = STRICT): void {
  let rejectedInARow = 0;
  for (let i = 0; i < 600 && rejectedInARow < 20; i++) {
    rejectedInARow = g.limiter.decide(key) ? 0 : rejectedInARow + 1;
    g.run(1);
  }
  expect(rejectedInARow).toBe(20);
  expect(g.limiter.decide(key)).toBe(false);
}

/** A wait whose outcome, once settled, is in `.result`. */
function track(p: Promise<boolean>) {
  const t: { result: boolean | undefined; error: unknown } = { result: undefined, error: undefined };
  p.then(
    (v) => {
      t.result = v;
    },
    (e: unknown) => {
      t.error = e;
    },
  );
  return t;
}

describe("GatewayLimiter.wait", () => {
  it("decides at once when units are there and nobody waits", async () => {
    const g = setup();
    expect(await g.limiter.wait("api/tenant=x", 1, { timeoutMs: 1000 })).toBe(true);
    expect(g.limiter.waiting).toBe(0);
  });

  it("admits waiters in FIFO order, each when the owner's next grant arrives, and never early", async () => {
    const g = setup();
    g.clock.set(600_000 + 200); // 200 ms into a second: the window ends in 800 ms
    exhaust(g);
    const order: number[] = [];
    const waits = [1, 2, 3].map((n) =>
      g.limiter.wait(STRICT, n === 2 ? 2 : 1, { timeoutMs: 5000 }).then((ok) => {
        order.push(n);
        return ok;
      }),
    );
    expect(g.limiter.waiting).toBe(3);
    // Nothing before the window ends, however often the gateway reports.
    expect(g.clock.now()).toBeLessThan(600_900);
    g.clock.runUntil(601_000 - 1);
    await settle();
    expect(order).toEqual([]);
    g.run(300);
    await settle();
    expect(await Promise.all(waits)).toEqual([true, true, true]);
    expect(order).toEqual([1, 2, 3]);
    expect(g.limiter.waiting).toBe(0);
  });

  it("a caller that arrives while others wait queues behind them, even if its cost would fit", async () => {
    const g = setup();
    exhaust(g);
    const big = track(g.limiter.wait(STRICT, 10, { timeoutMs: 5000 }));
    const small = track(g.limiter.wait(STRICT, 1, { timeoutMs: 5000 }));
    g.run(1000);
    await settle();
    // The new window's 10 units all went to the head; the small one waits for the next window.
    expect(big.result).toBe(true);
    expect(small.result).toBeUndefined();
    g.run(1000);
    await settle();
    expect(small.result).toBe(true);
  });

  it("reports the waiting units as rejected every interval, so the owner sees the demand", async () => {
    const g = setup();
    exhaust(g);
    const before = g.t.reports.length;
    const w = track(g.limiter.wait(STRICT, 3, { timeoutMs: 5000 }));
    g.run(500);
    const rejected = g.t.reports
      .slice(before)
      .flatMap((r) => r.req.entries.filter((e) => entryKey(g.t, r.address, e) === STRICT))
      .map((e) => e.rejected);
    // At least one report per interval while waiting, each showing the 3 units waited for.
    expect(rejected.filter((x) => x >= 3).length).toBeGreaterThanOrEqual(4);
    g.run(1000);
    await settle();
    expect(w.result).toBe(true);
  });

  it("times out within the clock's tick: false at exactly timeoutMs, the place freed", async () => {
    const g = setup();
    exhaust(g);
    const start = g.clock.now();
    const w = track(g.limiter.wait(STRICT, 1, { timeoutMs: 250 }));
    g.clock.runUntil(start + 249);
    await settle();
    expect(w.result).toBeUndefined();
    g.clock.runUntil(start + 250);
    await settle();
    expect(w.result).toBe(false);
    expect(g.limiter.waiting).toBe(0);
  });

  it("answers false at once for timeoutMs 0 or a cost the limit could never admit", async () => {
    const g = setup();
    exhaust(g);
    expect(await g.limiter.wait(STRICT, 1, { timeoutMs: 0 })).toBe(false);
    expect(await g.limiter.wait(STRICT, 11, { timeoutMs: 5000 })).toBe(false);
    expect(g.limiter.waiting).toBe(0);
  });

  it("an abort resolves false and frees the place: the next waiter takes the units", async () => {
    const g = setup();
    exhaust(g);
    const ac = new AbortController();
    const first = track(g.limiter.wait(STRICT, 10, { timeoutMs: 5000, signal: ac.signal }));
    const second = track(g.limiter.wait(STRICT, 10, { timeoutMs: 5000 }));
    g.run(100);
    ac.abort();
    await settle();
    expect(first.result).toBe(false);
    expect(g.limiter.waiting).toBe(1);
    g.run(1000);
    await settle();
    expect(second.result).toBe(true);
    // Aborted before the call: false at once, nothing taken.
    expect(await g.limiter.wait("api/tenant=x", 1, { timeoutMs: 100, signal: AbortSignal.abort() })).toBe(
      false,
    );
  });

  it("while the owner is unreachable, waiters are admitted from the fallback share as it refills", async () => {
    const g = setup();
    exhaust(g);
    g.t.modes.set("a:1", "fail");
    const ws = [1, 2, 3].map(() => track(g.limiter.wait(STRICT, 1, { timeoutMs: 5000 })));
    g.run(3000);
    await settle();
    expect(g.limiter.describe(STRICT)?.fallback).toBe(true);
    expect(ws.map((w) => w.result)).toEqual([true, true, true]);
  });

  it("close() resolves every waiter false", async () => {
    const g = setup();
    exhaust(g);
    const ws = [1, 2, 3].map(() => g.limiter.wait(STRICT, 1, { timeoutMs: 5000 }));
    g.limiter.close();
    expect(await Promise.all(ws)).toEqual([false, false, false]);
    expect(g.limiter.waiting).toBe(0);
    expect(g.clock.pending).toBeGreaterThanOrEqual(0);
  });

  it("bounds the waiters per key and in all, with an error naming the bound", async () => {
    const g = setup({ maxWaitersPerKey: 2, maxWaiters: 3 });
    exhaust(g);
    exhaust(g, "api/strict=2");
    const ws = [
      g.limiter.wait(STRICT, 1, { timeoutMs: 5000 }),
      g.limiter.wait(STRICT, 1, { timeoutMs: 5000 }),
    ];
    await expect(g.limiter.wait(STRICT, 1, { timeoutMs: 100 })).rejects.toThrow(CapacityError);
    await expect(g.limiter.wait(STRICT, 1, { timeoutMs: 100 })).rejects.toThrow(/maxWaitersPerKey/);
    ws.push(g.limiter.wait("api/strict=2", 1, { timeoutMs: 5000 }));
    await expect(g.limiter.wait("api/strict=3", 1, { timeoutMs: 100 })).rejects.toThrow(/maxWaiters\b/);
    g.limiter.close();
    expect(await Promise.all(ws)).toEqual([false, false, false]);
    expect(() => startGateway({ opts: { maxWaiters: 0 } })).toThrow(/maxWaiters must be/);
  });

  it("refuses a bad timeout naming timeoutMs, and changes nothing", async () => {
    const g = setup();
    for (const bad of [Number.NaN, -1, 1e12, Number.POSITIVE_INFINITY]) {
      await expect(g.limiter.wait(STRICT, 1, { timeoutMs: bad })).rejects.toThrow(InvalidArgumentError);
      await expect(g.limiter.wait(STRICT, 1, { timeoutMs: bad })).rejects.toThrow(/timeoutMs/);
    }
    await expect(g.limiter.wait(STRICT, -1, { timeoutMs: 10 })).rejects.toThrow(InvalidArgumentError);
    expect(g.limiter.waiting).toBe(0);
    expect(g.limiter.describe(STRICT)?.admittedSince ?? 0).toBe(0);
  });

  it("waiting takes no timers beyond one per waiter and one per report interval", async () => {
    const g = setup();
    exhaust(g);
    const idle = g.clock.pending;
    const ws = Array.from({ length: 50 }, () => g.limiter.wait(STRICT, 1, { timeoutMs: 10_000 }));
    expect(g.clock.pending - idle).toBeLessThanOrEqual(51);
    g.run(6000);
    expect((await Promise.all(ws)).filter(Boolean).length).toBe(50);
  });
});
