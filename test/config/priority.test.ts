import { describe, expect, it } from "vitest";
import { compileSources, type DescriptorEntry, resolveKey, splitPriority } from "../../src/config/index.js";

function d(...pairs: [string, string][]): DescriptorEntry[] {
  return pairs.map(([key, value]) => ({ key, value }));
}

describe("splitPriority", () => {
  it("absent: normal, and the same entries back (nothing copied)", () => {
    const entries = d(["group", "g"], ["tenant", "t"]);
    const split = splitPriority(entries);
    expect(split).toEqual({ entries, priority: "normal" });
    expect(typeof split === "object" && split.entries).toBe(entries);
    expect(splitPriority([])).toEqual({ entries: [], priority: "normal" });
  });

  it.each(["critical", "high", "normal", "low"] as const)("reads %s", (priority) => {
    expect(splitPriority(d(["tenant", "t"], ["priority", priority]))).toEqual({
      entries: d(["tenant", "t"]),
      priority,
    });
  });

  it("takes the entry out wherever it is", () => {
    const want = { entries: d(["group", "g"], ["tenant", "t"]), priority: "high" };
    expect(splitPriority(d(["priority", "high"], ["group", "g"], ["tenant", "t"]))).toEqual(want);
    expect(splitPriority(d(["group", "g"], ["priority", "high"], ["tenant", "t"]))).toEqual(want);
    expect(splitPriority(d(["group", "g"], ["tenant", "t"], ["priority", "high"]))).toEqual(want);
    expect(splitPriority(d(["priority", "low"]))).toEqual({ entries: [], priority: "low" });
  });

  it("does not change the entries it was given", () => {
    const entries = d(["group", "g"], ["priority", "high"]);
    splitPriority(entries);
    expect(entries).toEqual(d(["group", "g"], ["priority", "high"]));
  });

  it("names a bad value", () => {
    expect(splitPriority(d(["tenant", "t"], ["priority", "urgent"]))).toBe(
      'priority "urgent" is not a priority class (critical, high, normal, low)',
    );
    // Classes are written in lower case, as the config names them.
    expect(splitPriority(d(["priority", "HIGH"]))).toMatch(/^priority "HIGH" is not a priority class/);
    expect(splitPriority(d(["priority", ""]))).toMatch(/^priority "" is not a priority class/);
  });

  it("refuses a repeated priority entry, even with the same value", () => {
    expect(splitPriority(d(["priority", "high"], ["tenant", "t"], ["priority", "low"]))).toBe(
      "priority is given twice (entries 1 and 3); a request has one priority class",
    );
    expect(splitPriority(d(["priority", "high"], ["priority", "high"]))).toMatch(/given twice/);
  });
});

describe("resolveKey with a priority entry (batched reports of one class of a key)", () => {
  const config = compileSources([
    {
      file: "p.yaml",
      text: "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: { unit: second, requests_per_unit: 5 }\n",
    },
  ]);
  it("resolves the key without it and names the class's rank", () => {
    const r = resolveKey(config, "api/tenant=a/priority=critical");
    expect(r).toMatchObject({ counterKey: "api/tenant=a", rank: 3 });
    expect((resolveKey(config, "api/tenant=a") as { rank?: number }).rank).toBeUndefined();
    expect((resolveKey(config, "api/tenant=a/priority=normal") as { rank?: number }).rank).toBeUndefined();
    expect(resolveKey(config, "api/tenant=a/priority=soon")).toMatch(
      /priority "soon" is not a priority class/,
    );
  });
});
