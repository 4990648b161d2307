import { describe, expect, it } from "vitest";
import { every, ManualClock } from "../../src/core/clock.js";

describe("every(clock, ms, fn)", () => {
  it("runs fn every ms on the clock, like setInterval, until cancelled", () => {
    const clock = new ManualClock(0);
    const at: number[] = [];
    const t = every(clock, 250, () => at.push(clock.now()));
    clock.advance(249);
    expect(at).toEqual([]);
    clock.advance(751);
    expect(at).toEqual([250, 500, 750, 1000]);
    t.cancel();
    clock.advance(1000);
    expect(at).toEqual([250, 500, 750, 1000]);
  });

  it("can be cancelled from inside fn", () => {
    const clock = new ManualClock(0);
    let n = 0;
    const t = every(clock, 10, () => {
      if (++n === 3) t.cancel();
    });
    clock.advance(100);
    expect(n).toBe(3);
  });

  it("treats a period under 1 ms as 1 ms, as setInterval does", () => {
    const clock = new ManualClock(0);
    let n = 0;
    every(clock, 0, () => n++);
    clock.advance(5);
    expect(n).toBe(5);
  });
});
