import { describe, expect, it } from "vitest";
import { openLoop } from "../../src/testkit/open-loop.js";
import { PreciseTimer } from "../../src/testkit/precise-timer.js";

describe("the open loop and its timer", () => {
  it("a precise timer fires at or after the instant asked, and a newer request replaces the older", async () => {
    const timer = await PreciseTimer.start();
    try {
      const fired: string[] = [];
      const at = performance.now() + 20;
      const firedAt = await new Promise<number>((resolve) => {
        timer.at(performance.now() + 5, () => fired.push("replaced"));
        timer.at(at, () => {
          fired.push("kept");
          resolve(performance.now());
        });
      });
      expect(firedAt).toBeGreaterThanOrEqual(at);
      await new Promise((r) => setTimeout(r, 30));
      expect(fired).toEqual(["kept"]);
    } finally {
      timer.close();
    }
  });

  it("the open loop sends the scheduled number of calls and counts admissions and failures", async () => {
    let i = 0;
    const r = await openLoop({
      ratePerSec: 2000,
      seconds: 0.1,
      call: () => {
        i++;
        if (i % 10 === 0) throw new Error("boom");
        return i % 2 === 0 ? Promise.resolve(true) : false;
      },
    });
    expect(r.sent).toBe(200);
    expect(r.errors).toBe(20);
    expect(r.completed).toBe(180);
    expect(r.admitted).toBe(80);
    expect(r.firstError).toBe("boom");
  });

  it("spinning, it sends on schedule too, and counts each call's send lag and the most in flight", async () => {
    const r = await openLoop({
      ratePerSec: 1000,
      seconds: 0.05,
      spin: true,
      // Each call takes 5 ms, so calls a millisecond apart overlap.
      call: () => new Promise((resolve) => setTimeout(() => resolve(true), 5)),
    });
    expect(r.sent).toBe(50);
    expect(r.completed).toBe(50);
    expect(r.sendLag.totalCount).toBe(50);
    expect(r.maxInFlight).toBeGreaterThanOrEqual(2);
  });
});
