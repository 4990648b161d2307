import { describe, expect, it } from "vitest";
import { ManualClock, sleep } from "../../src/core/clock.js";

describe("ManualClock", () => {
  it("fires timers in time order, ties in the order they were set, as time passes them", () => {
    const c = new ManualClock(1000);
    const seen: string[] = [];
    c.after(20, () => seen.push(`b@${c.now()}`));
    c.after(10, () => seen.push(`a@${c.now()}`));
    c.after(20, () => seen.push(`c@${c.now()}`));
    const cancelled = c.after(5, () => seen.push("never"));
    cancelled.cancel();
    c.advance(15);
    expect(seen).toEqual(["a@1010"]);
    expect(c.now()).toBe(1015);
    c.advance(5);
    expect(seen).toEqual(["a@1010", "b@1020", "c@1020"]);
  });

  it("runs timers that timers set within the same advance, and set() fires nothing", () => {
    const c = new ManualClock(0);
    const seen: number[] = [];
    c.after(10, () => {
      seen.push(c.now());
      c.after(10, () => seen.push(c.now()));
    });
    c.set(50);
    expect(seen).toEqual([]);
    c.set(0);
    c.runUntil(100);
    expect(seen).toEqual([10, 20]);
    expect(c.now()).toBe(100);
    expect(() => c.advance(-1)).toThrow(RangeError);
  });

  it("elapsed() moves with advance and runUntil, never with set(), never back", () => {
    const c = new ManualClock(1000);
    expect(c.elapsed()).toBe(0);
    c.advance(40);
    expect(c.elapsed()).toBe(40);
    c.set(0); // the wall clock stepped back
    expect(c.elapsed()).toBe(40);
    c.advance(10);
    expect([c.now(), c.elapsed()]).toEqual([10, 50]);
    c.set(5000); // and forward
    c.runUntil(5001);
    expect(c.elapsed()).toBe(51);
  });

  it("sleep resolves when the clock reaches it", async () => {
    const c = new ManualClock(0);
    let done = false;
    const p = sleep(c, 30).then(() => {
      done = true;
    });
    c.advance(29);
    await Promise.resolve();
    expect(done).toBe(false);
    c.advance(1);
    await p;
    expect(done).toBe(true);
  });
});
