import { describe, expect, it } from "vitest";
import { intersect, normalize, subtract } from "../../src/keyspace/range-set.js";

const s = (start: number, end: number) => ({ start, end });

describe("range sets", () => {
  it("normalize sorts, merges overlapping and adjacent ranges, drops empty ones", () => {
    expect(normalize([s(5, 7), s(0, 2), s(2, 3), s(6, 9), s(4, 4)])).toEqual([s(0, 3), s(5, 9)]);
  });

  it("intersect keeps the points in both", () => {
    expect(intersect([s(0, 10), s(20, 30)], [s(5, 25)])).toEqual([s(5, 10), s(20, 25)]);
    expect(intersect([s(0, 10)], [s(10, 20)])).toEqual([]);
  });

  it("subtract keeps the points of the first not in the second", () => {
    expect(subtract([s(0, 10)], [s(2, 3), s(5, 7)])).toEqual([s(0, 2), s(3, 5), s(7, 10)]);
    expect(subtract([s(0, 10), s(20, 30)], [s(5, 25)])).toEqual([s(0, 5), s(25, 30)]);
    expect(subtract([s(0, 10)], [s(0, 10)])).toEqual([]);
    expect(subtract([s(0, 2 ** 32)], [])).toEqual([s(0, 2 ** 32)]);
  });

  it("agrees with a point-by-point model on random sets", () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const set = () =>
      Array.from({ length: rnd(5) }, () => {
        const a = rnd(40);
        return s(a, a + rnd(10));
      });
    const has = (xs: { start: number; end: number }[], p: number) =>
      xs.some((x) => p >= x.start && p < x.end);
    for (let t = 0; t < 200; t++) {
      const a = set();
      const b = set();
      const i = intersect(a, b);
      const d = subtract(a, b);
      for (let p = 0; p < 50; p++) {
        expect(has(i, p)).toBe(has(a, p) && has(b, p));
        expect(has(d, p)).toBe(has(a, p) && !has(b, p));
      }
    }
  });
});
