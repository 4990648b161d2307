import { describe, expect, it } from "vitest";
import {
  amountProblem,
  DEFAULT_INPUT_LIMITS,
  type EntryAmounts,
  entryAmountProblem,
} from "../../src/protocol/input-limits.js";

const limits = { ...DEFAULT_INPUT_LIMITS, maxAmount: 1000 };
const GOOD: EntryAmounts = { admitted: 3, rejected: 1, held: 0, windowAdmitted: 7, refunded: 2 };
const FIELDS: [keyof EntryAmounts, string][] = [
  ["admitted", "admitted"],
  ["rejected", "rejected"],
  ["held", "held"],
  ["windowAdmitted", "window_admitted"],
  ["refunded", "refunded"],
];
const BAD = [-1, -0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1000.5, 1e300];

describe("entryAmountProblem: one check per report entry, the named reason when it fails", () => {
  it("a good entry, amounts from 0 to the maximum, and an entry without refunded pass", () => {
    expect(entryAmountProblem(GOOD, limits)).toBeUndefined();
    expect(
      entryAmountProblem({ admitted: 0, rejected: 1000, held: 0, windowAdmitted: 0 }, limits),
    ).toBeUndefined();
    expect(entryAmountProblem({ ...GOOD, admitted: -0 }, limits)).toBeUndefined();
  });

  it("each field's bad value is named as amountProblem names it", () => {
    for (const [field, name] of FIELDS) {
      for (const v of BAD) {
        const got = entryAmountProblem({ ...GOOD, [field]: v }, limits);
        expect(got, `${field}=${v}`).toBe(amountProblem(name, v, limits));
        expect(got).toMatch(new RegExp(`^${name} `));
      }
    }
  });

  it("a value that is not a number is refused, even one that compares like a number", () => {
    for (const [field, name] of FIELDS) {
      const got = entryAmountProblem({ ...GOOD, [field]: "5" as unknown as number }, limits);
      expect(got, field).toBe(`${name} is not a number`);
    }
  });

  it("the first bad field in wire order is the one named", () => {
    expect(entryAmountProblem({ ...GOOD, rejected: -2, refunded: Number.NaN }, limits)).toBe(
      "rejected is negative (-2)",
    );
  });
});
