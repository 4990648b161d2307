import { describe, expect, it } from "vitest";
import { Assignment, type Member, rangesOf } from "../../src/keyspace/assignment.js";

const m = (...ids: string[]): Member[] => ids.map((id) => ({ id, address: `${id}:1` }));

describe("rangesOf", () => {
  it("is the ranges a member owns, adjacent slices merged", () => {
    const a = new Assignment(1, m("a", "b"), Uint32Array.of(0, 100, 200, 300), Uint16Array.of(0, 0, 1, 0));
    expect(rangesOf(a, "a")).toEqual([
      { start: 0, end: 200 },
      { start: 300, end: 2 ** 32 },
    ]);
    expect(rangesOf(a, "b")).toEqual([{ start: 200, end: 300 }]);
    expect(rangesOf(a, "c")).toEqual([]);
  });
});
