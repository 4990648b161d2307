import { describe, expect, it } from "vitest";
import { limitFields, sameLimit } from "../../src/client/same-limit.js";
import { compileSources } from "../../src/config/load.js";
import type { LimitRule } from "../../src/config/types.js";

const YAML = `domain: api
descriptors:
  - key: tenant
    rate_limit:
      name: per-tenant
      algorithm: token_bucket
      unit: second
      requests_per_unit: 100
      burst: 150
      cost_unit: tokens
      local_allowance: 3
      fail_mode: closed
`;

function rule(text = YAML, file = "limits.yaml"): LimitRule {
  return compileSources([{ file, text }]).rules[0]!;
}

function changed(value: unknown): unknown {
  if (typeof value === "number") return value + 1;
  if (typeof value === "boolean") return !value;
  if (typeof value === "string") return `${value}-changed`;
  if (Array.isArray(value)) return [...value, "other"];
  return { ...(value as object), path: "elsewhere" };
}

describe("sameLimit: whether a reload left a key's limit as it was", () => {
  it("compares exactly the fields it compared when they were listed by hand", () => {
    expect(limitFields(rule()).sort()).toEqual(
      [
        "id",
        "algorithm",
        "limit",
        "windowMs",
        "burst",
        "unlimited",
        "shadowMode",
        "localAllowance",
        "failMode",
        "leaseTimeoutMs",
        "soft",
      ].sort(),
    );
  });

  it("a change to any limit field makes it another limit", () => {
    const r = rule();
    for (const f of limitFields(r)) {
      const edited = { ...r, [f]: changed((r as unknown as Record<string, unknown>)[f]) } as LimitRule;
      expect(sameLimit(r, edited), f).toBe(false);
      expect(sameLimit(edited, r), f).toBe(false);
    }
  });

  it("a change to only its name, domain, unit, cost unit, replaces or source keeps it the same", () => {
    const r = rule();
    for (const f of ["name", "domain", "unit", "costUnit", "replaces", "source"] as const) {
      const edited = { ...r, [f]: changed(r[f]) } as LimitRule;
      expect(sameLimit(r, edited), f).toBe(true);
    }
  });

  it("the same rule recompiled, from another file or another place in it, is the same", () => {
    const moved = YAML.replace(
      "descriptors:\n",
      "descriptors:\n  - key: other\n    rate_limit: { unit: second, requests_per_unit: 1 }\n",
    );
    const elsewhere = compileSources([{ file: "b.yaml", text: moved }]).rules.find(
      (x) => x.id === rule().id,
    )!;
    expect(elsewhere.source).not.toEqual(rule().source);
    expect(sameLimit(rule(), rule())).toBe(true);
    expect(sameLimit(rule(), elsewhere)).toBe(true);
    expect(sameLimit(rule(), rule(YAML.replace("100", "101")))).toBe(false);
  });
});
