import { describe, expect, it } from "vitest";
import { Engine, limitDefaults, ManualClock } from "../../src/core/index.js";

const T0 = 1_700_000_000_000;
const tb = (limit: number, burst = limit, windowMs = 1000) =>
  limitDefaults({ algorithm: "token_bucket", limit, burst, windowMs });

describe("token bucket", () => {
  it("starts full, counts down exactly, refills at the rate", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = tb(10); // 10 per second: one token per 100 ms
    expect(e.check("k", l, 4, clock.now())).toMatchObject({ allowed: true, remaining: 6, resetAt: T0 + 400 });
    expect(e.check("k", l, 6, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
    expect(e.check("k", l, 1, clock.now())).toMatchObject({ allowed: false, retryAt: T0 + 100 });
    clock.advance(250);
    expect(e.check("k", l, 2, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
    expect(e.check("k", l, 1, clock.now())).toMatchObject({ allowed: false, retryAt: T0 + 300 });
  });

  it("never holds more than the burst", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = tb(10, 3);
    expect(e.check("k", l, 4, clock.now()).allowed).toBe(false);
    clock.advance(60_000);
    expect(e.check("k", l, 3, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
  });

  it("a negative balance is paid back before anything more is admitted", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = tb(10);
    e.check("k", l, 10, clock.now());
    e.adjust("k", l, 5, clock.now()); // settled 5 over the estimate: 5 tokens in debt
    expect(e.peek("k", l, clock.now()).remaining).toBe(0);
    clock.advance(500); // repays exactly the debt
    expect(e.check("k", l, 1, clock.now()).allowed).toBe(false);
    clock.advance(100);
    expect(e.check("k", l, 1, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
  });

  it("a lowered limit or burst applies at once", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    e.check("k", tb(100), 10, clock.now()); // 90 left
    expect(e.check("k", tb(100, 20), 1, clock.now())).toMatchObject({ allowed: true, remaining: 19 });
    clock.advance(100);
    // 10/s now: 100 ms refills one token.
    expect(e.check("k", tb(10, 20), 1, clock.now())).toMatchObject({ allowed: true, remaining: 19 });
  });

  it("an algorithm change starts the counter afresh", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    e.check("k", tb(10), 10, clock.now());
    const fw = limitDefaults({ algorithm: "fixed_window", limit: 5 });
    expect(e.check("k", fw, 1, clock.now()).remaining).toBe(4);
  });
});
