import { describe, expect, it } from "vitest";
import { diffConfigs, formatSummary } from "../../src/config/index.js";
import { compileSources } from "../../src/config/load.js";

/** `global: true` in `rate_limit` (issue 14): a limit held across regional clusters. */

const yaml = (global: string) => `domain: api
descriptors:
  - key: orders
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 1000
${global}
  - key: local
    rate_limit: { unit: second, requests_per_unit: 10 }
`;

const load = (text: string) => compileSources([{ file: "g.yaml", text }]);

describe("global limits in the config", () => {
  it("reads global: true, and leaves it out where it is not written", () => {
    const c = load(yaml("      global: true"));
    const orders = c.rules.find((r) => r.id.includes("orders"))!;
    const local = c.rules.find((r) => r.id.includes("local"))!;
    expect(orders.global).toBe(true);
    expect("global" in local).toBe(false);
  });

  it("global: false is the same as leaving it out", () => {
    const c = load(yaml("      global: false"));
    expect("global" in c.rules.find((r) => r.id.includes("orders"))!).toBe(false);
  });

  it("check-config marks a global limit", () => {
    expect(formatSummary(load(yaml("      global: true")))).toMatch(/orders .*\[global\]/);
  });

  it("a reload that makes a limit global changes that rule", () => {
    const diff = diffConfigs(load(yaml("")), load(yaml("      global: true")));
    expect(diff.rulesChanged).toEqual([expect.stringContaining("orders")]);
  });
});
