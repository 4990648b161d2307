import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import { compileSources, describeRule } from "../../src/config/index.js";

/** `resource` in `rate_limit`: a quota of a resource measured after serving. */

function compile(rateLimit: string) {
  return compileSources([
    { file: "r.yaml", text: `domain: d\ndescriptors:\n  - key: tenant\n    rate_limit:\n${rateLimit}` },
  ]);
}

function problems(rateLimit: string): string[] {
  try {
    compile(rateLimit);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  throw new Error("compiled without problems");
}

const BASE = "      algorithm: token_bucket\n      unit: minute\n      requests_per_unit: 120\n";

describe("resource", () => {
  it("reads name, prior and smoothing; the name is the rule's cost unit", () => {
    const c = compile(`${BASE}      resource: { name: cpu_seconds, prior: 0.02, smoothing: 0.1 }\n`);
    const rule = c.rules[0]!;
    expect(rule.resource).toEqual({ name: "cpu_seconds", prior: 0.02, smoothing: 0.1 });
    expect(rule.costUnit).toBe("cpu_seconds");
    expect(describeRule(rule)).toContain("120 cpu_seconds per 1m, measured after serving (prior 0.02)");
  });

  it("smoothing defaults to 0.05; a rule without resource has none", () => {
    expect(
      compile(`${BASE}      resource: { name: tokens, prior: 500 }\n`).rules[0]!.resource?.smoothing,
    ).toBe(0.05);
    expect(compile(BASE).rules[0]!.resource).toBeUndefined();
  });

  it.each([
    ["{ prior: 1 }", "descriptors[0].rate_limit.resource.name: is required"],
    ["{ name: cpu }", "descriptors[0].rate_limit.resource.prior: is required"],
    ["{ name: cpu, prior: 0 }", "descriptors[0].rate_limit.resource.prior: must be a number above 0"],
    ["{ name: cpu, prior: .inf }", "descriptors[0].rate_limit.resource.prior: must be a number above 0"],
    ["{ name: cpu, prior: lots }", "descriptors[0].rate_limit.resource.prior: must be a number above 0"],
    ["{ name: '', prior: 1 }", "descriptors[0].rate_limit.resource.name: must be a short name"],
    ["{ name: 7, prior: 1 }", "descriptors[0].rate_limit.resource.name: must be text"],
    [
      "{ name: cpu, prior: 1, smoothing: 1.5 }",
      "descriptors[0].rate_limit.resource.smoothing: must be a fraction",
    ],
    [
      "{ name: cpu, prior: 1, smoothing: 0 }",
      "descriptors[0].rate_limit.resource.smoothing: must be a fraction",
    ],
    ["{ name: cpu, prior: 1, window: 2 }", "descriptors[0].rate_limit.resource.window"],
    ["cpu_seconds", "descriptors[0].rate_limit.resource"],
  ])("refuses resource: %s, naming the field", (value, expected) => {
    const found = problems(`${BASE}      resource: ${value}\n`);
    expect(
      found.some((p) => p.startsWith(expected)),
      found.join("\n"),
    ).toBe(true);
  });

  it("refuses cost_unit beside it, and concurrency or unlimited rules", () => {
    expect(problems(`${BASE}      cost_unit: tokens\n      resource: { name: cpu, prior: 1 }\n`)[0]).toMatch(
      /rate_limit\.cost_unit: cannot be given with resource/,
    );
    expect(
      problems(
        "      algorithm: concurrency\n      requests_per_unit: 5\n      resource: { name: cpu, prior: 1 }\n",
      )[0],
    ).toMatch(/rate_limit\.resource: does not apply to algorithm concurrency/);
    expect(problems("      unlimited: true\n      resource: { name: cpu, prior: 1 }\n")[0]).toMatch(
      /rate_limit\.resource: does not apply to an unlimited rule/,
    );
  });
});
