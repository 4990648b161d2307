import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Member } from "../../src/keyspace/assignment.js";
import { buddyOf } from "../../src/keyspace/buddy.js";

const m = (...ids: string[]): Member[] => ids.map((id, i) => ({ id, address: `10.0.0.${i}:8081` }));

describe("buddyOf", () => {
  it("is the next member by id, wrapping around, whatever the listed order", () => {
    const members = m("s3", "s1", "s2");
    expect(buddyOf(members, "s1")?.id).toBe("s2");
    expect(buddyOf(members, "s2")?.id).toBe("s3");
    expect(buddyOf(members, "s3")?.id).toBe("s1");
  });

  it("has none with a single member, or for an id that is not a member", () => {
    expect(buddyOf(m("s1"), "s1")).toBeUndefined();
    expect(buddyOf(m("s1", "s2"), "s9")).toBeUndefined();
    expect(buddyOf([], "s1")).toBeUndefined();
  });

  it("pairs two members with each other", () => {
    const members = m("b", "a");
    expect(buddyOf(members, "a")?.id).toBe("b");
    expect(buddyOf(members, "b")?.id).toBe("a");
  });

  it("is a cycle through every member: each is the buddy of exactly one other, never of itself", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 6 }), { minLength: 2, maxLength: 12 }),
        (ids) => {
          const members = m(...ids);
          const buddies = ids.map((id) => buddyOf(members, id)!.id);
          for (const [i, b] of buddies.entries()) expect(b).not.toBe(ids[i]);
          expect(new Set(buddies).size).toBe(ids.length);
        },
      ),
    );
  });
});
