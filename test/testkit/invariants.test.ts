import { describe, expect, it } from "vitest";
import { InvariantChecker } from "../../src/testkit/invariants.js";

describe("InvariantChecker", () => {
  const limits = { a: { limit: 10, windowMs: 1000 }, b: { limit: 4, windowMs: 500 } };

  function series(): InvariantChecker {
    const c = new InvariantChecker(limits);
    // a, window [10000, 11000): 8 admitted (cost 1 x 6 + cost 2), 3 rejected.
    for (let i = 0; i < 6; i++) c.record({ key: "a", at: 10_000 + i * 100, cost: 1, allowed: true });
    c.record({ key: "a", at: 10_999, cost: 2, allowed: true });
    c.record({ key: "a", at: 10_999, cost: 3, allowed: false });
    // a, window [11000, 12000): 11 admitted (over 10).
    for (let i = 0; i < 11; i++) c.record({ key: "a", at: 11_000 + i, cost: 1, allowed: true });
    // b, windows of 500 ms: [10000, 10500) 4 admitted, [10500, 11000) 5 admitted, 1 rejected.
    for (let i = 0; i < 4; i++) c.record({ key: "b", at: 10_000 + i, cost: 1, allowed: true });
    for (let i = 0; i < 5; i++) c.record({ key: "b", at: 10_500 + i, cost: 1, allowed: true });
    c.record({ key: "b", at: 10_999, cost: 1, allowed: false });
    return c;
  }

  it("groups decisions into epoch-aligned fixed windows per key", () => {
    expect(series().windows()).toEqual([
      { key: "a", windowStart: 10_000, admitted: 8, rejected: 3, limit: 10, ratio: 0.8 },
      { key: "a", windowStart: 11_000, admitted: 11, rejected: 0, limit: 10, ratio: 1.1 },
      { key: "b", windowStart: 10_000, admitted: 4, rejected: 0, limit: 4, ratio: 1 },
      { key: "b", windowStart: 10_500, admitted: 5, rejected: 1, limit: 4, ratio: 1.25 },
    ]);
  });

  it("gives maxRatio per key and overall", () => {
    const c = series();
    expect(c.maxRatio("a")).toBe(1.1);
    expect(c.maxRatio("b")).toBe(1.25);
    expect(c.maxRatio()).toBe(1.25);
    expect(c.maxRatio("none")).toBe(0);
    expect(c.maxRatioByKey()).toEqual({ a: 1.1, b: 1.25 });
  });

  it("lists the windows over limit x (1 + epsilon)", () => {
    const c = series();
    expect(c.check(0).map((v) => [v.key, v.windowStart, v.admitted, v.bound])).toEqual([
      ["a", 11_000, 11, 10],
      ["b", 10_500, 5, 4],
    ]);
    // 11 <= 10 x 1.1 (within float rounding of 11): a passes, b (5 > 4.4) does not.
    expect(c.check(0.1 + 1e-9).map((v) => v.key)).toEqual(["b"]);
    expect(c.check(0.25)).toEqual([]);
  });

  it("adds batched-mode totals into the same windows", () => {
    const c = series();
    c.recordTotal("a", 10_500, 3, 7);
    expect(c.windows()[0]).toMatchObject({ admitted: 11, rejected: 10, ratio: 1.1 });
  });

  it("reports an id recorded twice, and a limit of 0 as an infinite ratio", () => {
    const c = new InvariantChecker((key) =>
      key === "z" ? { limit: 0, windowMs: 1000 } : { limit: 5, windowMs: 1000 },
    );
    c.record({ key: "x", at: 1, cost: 1, allowed: true, id: "r1" });
    c.record({ key: "x", at: 2, cost: 1, allowed: true, id: "r2" });
    c.record({ key: "x", at: 3, cost: 1, allowed: true, id: "r1" });
    expect(c.duplicates()).toEqual(["r1"]);
    c.record({ key: "z", at: 5, cost: 1, allowed: false });
    expect(c.maxRatio("z")).toBe(0);
    c.record({ key: "z", at: 6, cost: 1, allowed: true });
    expect(c.maxRatio("z")).toBe(Number.POSITIVE_INFINITY);
  });

  it("refuses a key it has no limit for", () => {
    const c = new InvariantChecker(limits);
    expect(() => c.record({ key: "nope", at: 0, cost: 1, allowed: true })).toThrow(/no limit for key nope/);
  });
});
