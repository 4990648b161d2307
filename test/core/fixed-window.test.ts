import { describe, expect, it } from "vitest";
import { Engine, limitDefaults, ManualClock } from "../../src/core/index.js";

const T0 = 1_700_000_000_000; // aligned to a second and to a minute
const fw = (limit: number, windowMs = 1000) => limitDefaults({ algorithm: "fixed_window", limit, windowMs });

describe("fixed window", () => {
  it("counts down exactly and rejects a request larger than what remains", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = fw(5);
    for (let i = 4; i >= 0; i--) {
      const d = e.check("k", l, 1, clock.now());
      expect(d).toMatchObject({ allowed: true, remaining: i, resetAt: T0 + 1000 });
    }
    const over = e.check("k", l, 1, clock.now());
    expect(over).toMatchObject({ allowed: false, remaining: 0, retryAt: T0 + 1000 });
  });

  it("a cost larger than the remainder is rejected and changes nothing", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = fw(10);
    expect(e.check("k", l, 7, clock.now()).remaining).toBe(3);
    expect(e.check("k", l, 4, clock.now())).toMatchObject({ allowed: false, remaining: 3 });
    expect(e.check("k", l, 3, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
    expect(e.check("k", l, 11, clock.now()).retryAt).toBe(Number.POSITIVE_INFINITY);
  });

  it("windows are aligned to the epoch and reset at the boundary", () => {
    const clock = new ManualClock(T0 + 999);
    const e = new Engine();
    const l = fw(2);
    expect(e.check("k", l, 2, clock.now())).toMatchObject({
      allowed: true,
      remaining: 0,
      resetAt: T0 + 1000,
    });
    clock.advance(1);
    expect(e.check("k", l, 1, clock.now())).toMatchObject({
      allowed: true,
      remaining: 1,
      resetAt: T0 + 2000,
    });
  });

  it("a limit changed while counting applies to the count so far", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    e.check("k", fw(10), 6, clock.now());
    expect(e.check("k", fw(8), 1, clock.now())).toMatchObject({ allowed: true, remaining: 1 });
    expect(e.check("k", fw(5), 1, clock.now())).toMatchObject({ allowed: false, remaining: 0 });
    expect(e.check("k", fw(20), 1, clock.now())).toMatchObject({ allowed: true, remaining: 12 });
  });

  it("envoy mode counts every hit and is over limit once past the limit", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = fw(3);
    const run = () => e.checkMany([{ key: "k", limit: l, cost: 2 }], clock.now(), "envoy")[0]!;
    expect(run()).toMatchObject({ allowed: true, remaining: 1 });
    expect(run()).toMatchObject({ allowed: false, remaining: 0 });
    expect(e.peek("k", l, clock.now()).remaining).toBe(0);
  });

  it("settling adjusts by the difference: refund and overage", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = fw(100);
    e.check("k", l, 50, clock.now()); // reserve an estimate
    expect(e.adjust("k", l, -30, clock.now()).remaining).toBe(80); // actual 20
    e.check("k", l, 50, clock.now());
    expect(e.adjust("k", l, 40, clock.now()).remaining).toBe(0); // actual 90: over the limit, charged
    expect(e.check("k", l, 1, clock.now()).allowed).toBe(false);
  });

  it("shadow mode admits but reports that it would have rejected", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = { ...fw(1), shadowMode: true };
    expect(e.check("k", l, 1, clock.now())).toMatchObject({ allowed: true, shadowed: false });
    expect(e.check("k", l, 1, clock.now())).toMatchObject({ allowed: true, shadowed: true });
  });
});
