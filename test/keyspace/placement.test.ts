import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Assignment, type Member, movedFraction } from "../../src/keyspace/assignment.js";
import { keyPoint, pointFromWire, pointToWire } from "../../src/keyspace/hash.js";
import { evenStarts, initialAssignment, place, SLICES_PER_MEMBER } from "../../src/keyspace/placement.js";

const members = (n: number, prefix = "m"): Member[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, address: `10.0.0.${i}:8081` }));

/** Share of the key space each member owns. */
function shares(a: Assignment): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < a.slices; i++) {
    const id = a.members[a.owners[i]!]!.id;
    out.set(id, (out.get(id) ?? 0) + a.width(i) / 2 ** 32);
  }
  return out;
}

describe("slice table", () => {
  it("every point of the key space has exactly one slice and one owner", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.array(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { maxLength: 200 }),
        (n, points) => {
          const a = initialAssignment(1, members(n));
          for (const p of [0, 2 ** 32 - 1, ...points]) {
            const s = a.sliceOf(p);
            expect(a.starts[s]!).toBeLessThanOrEqual(p);
            expect(p).toBeLessThan(a.starts[s]! + a.width(s));
            expect(a.members).toContain(a.ownerOf(p));
          }
          let total = 0;
          for (let i = 0; i < a.slices; i++) total += a.width(i);
          expect(total).toBe(2 ** 32);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("refuses a table with gaps, overlaps or unknown owners", () => {
    const ms = members(2);
    expect(() => new Assignment(1, ms, Uint32Array.of(5, 10), Uint16Array.of(0, 1))).toThrow(
      /starts at 5, not 0/,
    );
    expect(() => new Assignment(1, ms, Uint32Array.of(0, 10, 10), Uint16Array.of(0, 1, 0))).toThrow(
      /not after/,
    );
    expect(() => new Assignment(1, ms, Uint32Array.of(0, 10), Uint16Array.of(0, 2))).toThrow(
      /member #2 of 2/,
    );
    expect(() => new Assignment(1, ms, Uint32Array.of(0), Uint16Array.of(0, 0))).toThrow(
      /1 starts but 2 owners/,
    );
  });

  it("cuts SLICES_PER_MEMBER slices per member, spread over every member", () => {
    const a = initialAssignment(1, members(8));
    expect(a.slices).toBe(8 * SLICES_PER_MEMBER);
    for (const share of shares(a).values()) expect(share).toBeGreaterThan(0.125 * 0.5);
  });
});

describe("consistent placement", () => {
  it("a join moves only slices to the newcomer, about 1/N of the key space", () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 30 }), (n) => {
        const before = initialAssignment(1, members(n));
        const after = place(2, members(n + 1), before.starts);
        for (let i = 0; i < before.slices; i++) {
          const was = before.members[before.owners[i]!]!.id;
          const now = after.members[after.owners[i]!]!.id;
          if (was !== now) expect(now).toBe(`m${n}`);
        }
        const moved = movedFraction(before, after);
        expect(moved).toBeGreaterThan(0.25 / (n + 1));
        expect(moved).toBeLessThan(2.5 / (n + 1));
      }),
      { numRuns: 29 },
    );
  });

  it("a leave moves exactly the leaver's slices", () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 30 }), fc.nat(), (n, k) => {
        const ms = members(n);
        const before = initialAssignment(1, ms);
        const leaver = ms[k % n]!;
        const after = place(
          2,
          ms.filter((m) => m !== leaver),
          before.starts,
        );
        expect(movedFraction(before, after)).toBeCloseTo(shares(before).get(leaver.id) ?? 0, 9);
        for (let i = 0; i < before.slices; i++) {
          const was = before.members[before.owners[i]!]!.id;
          if (was !== leaver.id) expect(after.members[after.owners[i]!]!.id).toBe(was);
        }
      }),
      { numRuns: 29 },
    );
  });

  it("does not depend on the order members are listed in", () => {
    const ms = members(7);
    const a = place(1, ms, evenStarts(128));
    const b = place(1, [...ms].reverse(), evenStarts(128));
    expect(movedFraction(a, b)).toBe(0);
  });
});

describe("key points", () => {
  it("spread shard keys evenly over the key space", () => {
    const buckets = new Array(16).fill(0);
    for (let i = 0; i < 160_000; i++) buckets[Math.floor(keyPoint(`tenant-${i}`) / 2 ** 28)]++;
    for (const b of buckets) expect(Math.abs(b - 10_000)).toBeLessThan(500);
  });

  it("carry slice starts on the wire as 64-bit decimal strings", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (p) => {
        expect(pointFromWire(pointToWire(p))).toBe(p);
      }),
    );
    expect(pointToWire(1)).toBe("4294967296");
    expect(pointFromWire("4294967297")).toBeUndefined(); // not on a slice boundary
    expect(pointFromWire("18446744073709551616")).toBeUndefined(); // 2^64
    expect(pointFromWire("-1")).toBeUndefined();
  });
});
