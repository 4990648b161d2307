import { describe, expect, it } from "vitest";
import { Engine, limitDefaults, ManualClock } from "../../src/core/index.js";

const T0 = 1_700_000_000_000;
const sw = (limit: number, windowMs = 1000) =>
  limitDefaults({ algorithm: "sliding_window", limit, windowMs });

describe("sliding window", () => {
  it("weights the previous window by how much of it is still covered", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = sw(10);
    expect(e.check("k", l, 10, clock.now()).remaining).toBe(0);
    clock.advance(1250); // previous = 10, weight 0.75 -> estimate 7.5
    expect(e.check("k", l, 2, clock.now())).toMatchObject({ allowed: true, remaining: 0 }); // 9.5 -> 0.5 left
    expect(e.check("k", l, 1, clock.now())).toMatchObject({ allowed: false });
    // 10 * (1 - e) + 2 <= 9 when e >= 0.3: at T0 + 1300.
    expect(e.check("k", l, 1, clock.now()).retryAt).toBe(T0 + 1300);
    clock.set(T0 + 1300);
    expect(e.check("k", l, 1, clock.now()).allowed).toBe(true);
  });

  it("a window skipped entirely forgets the old count", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = sw(10);
    e.check("k", l, 10, clock.now());
    clock.advance(2000);
    expect(e.check("k", l, 10, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
  });

  it("when this window alone is too full, waits for it to decay as the previous one", () => {
    const clock = new ManualClock(T0 + 900);
    const e = new Engine();
    const l = sw(10);
    e.check("k", l, 10, clock.now());
    // need estimate <= 5 : 10 * (1 - e) <= 5 -> e = 0.5 into the next window.
    expect(e.check("k", l, 5, clock.now())).toMatchObject({ allowed: false, retryAt: T0 + 1500 });
  });

  it("a limit changed while counting applies to the estimate so far", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    e.check("k", sw(10), 6, clock.now());
    expect(e.check("k", sw(7), 2, clock.now()).allowed).toBe(false);
    expect(e.check("k", sw(7), 1, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
  });
});
