import { describe, expect, it } from "vitest";
import { formatSummary } from "../../src/config/check.js";
import { ConfigError } from "../../src/config/errors.js";
import { compileSources } from "../../src/config/load.js";

/** `pools:` and `rate_limit.pool` (issue 14): parsing, defaults, placement, and each mistake named. */

const GOOD = `domain: api
pools:
  gpu: { target: 0.8, idle_below: 0.5 }
  cpu: { target: 0.7 }
descriptors:
  - key: model
    rate_limit: { unit: second, requests_per_unit: 100, algorithm: token_bucket, pool: gpu }
  - key: plain
    rate_limit: { unit: second, requests_per_unit: 100 }
`;

function problems(...texts: string[]): string[] {
  try {
    compileSources(texts.map((text, i) => ({ file: `f${i}.yaml`, text })));
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.file}:${p.path}: ${p.message}`);
    throw e;
  }
  return [];
}

describe("pools", () => {
  const config = compileSources([{ file: "f.yaml", text: GOOD }]);

  it("reads each pool with its target and idle threshold (default target - 0.2)", () => {
    expect(config.pools).toEqual([
      { name: "gpu", target: 0.8, idleBelow: 0.5 },
      { name: "cpu", target: 0.7, idleBelow: 0.5 },
    ]);
  });

  it("attaches the pool to the rule and places the rule's counters by the pool's key", () => {
    const r = config.resolve("api", [{ key: "model", value: "llama" }])!;
    expect(r.rule.pool).toEqual({ name: "gpu", target: 0.8, idleBelow: 0.5 });
    expect(r.shardKey).toBe("pool/gpu");
    expect(r.counterKey).toBe("api/model=llama");
    const plain = config.resolve("api", [{ key: "plain", value: "x" }])!;
    expect(plain.rule.pool).toBeUndefined();
    expect(plain.shardKey).toBe("api/plain=x");
  });

  it("names an unknown pool, listing the defined ones", () => {
    const text = GOOD.replace("pool: gpu", "pool: tpu");
    expect(problems(text)).toEqual([
      'f0.yaml:descriptors[0].rate_limit.pool: no pool named "tpu" (pools: "gpu", "cpu"); define it under pools:',
    ]);
  });

  it("refuses a pool defined twice across documents, naming the first", () => {
    const other = `domain: other\npools:\n  gpu: { target: 0.5 }\ndescriptors: []\n`;
    expect(problems(GOOD, other)).toEqual([
      'f1.yaml:pools.gpu: pool "gpu" is already defined at f0.yaml:3 (pools.gpu); each pool is defined once',
    ]);
  });

  it.each([
    ["target: 0", "pools.gpu.target: must be within (0, 1], got 0"],
    ["target: 1.5", "pools.gpu.target: must be within (0, 1], got 1.5"],
    ['target: "high"', 'pools.gpu.target: must be a number, got "high"'],
    ["target: 0.8, idle_below: 0.8", "pools.gpu.idle_below: must be below target 0.8, got 0.8"],
    ["target: 0.8, idle_below: 0.9", "pools.gpu.idle_below: must be within [0, 0.8], got 0.9"],
    ["idle_below: 0.2", "pools.gpu.target: is required (the utilisation to hold the pool at, e.g. 0.8)"],
    ["target: 0.8, tagret: 1", "pools.gpu.tagret"],
  ])("names the bad field: { %s }", (fields, expected) => {
    const text = GOOD.replace("gpu: { target: 0.8, idle_below: 0.5 }", `gpu: { ${fields} }`).replace(
      ", pool: gpu",
      "",
    );
    const got = problems(text);
    expect(got).toHaveLength(1);
    expect(got[0]).toContain(`f0.yaml:${expected}`);
  });

  it("refuses a bad pool name and a pool on a concurrency limit", () => {
    expect(problems(GOOD.replace("  cpu: { target: 0.7 }", '  "a b": { target: 0.7 }'))[0]).toContain(
      "f0.yaml:pools: a pool name must be 1-64 letters, digits",
    );
    const conc = GOOD.replace(
      "{ unit: second, requests_per_unit: 100, algorithm: token_bucket, pool: gpu }",
      "{ requests_per_unit: 10, algorithm: concurrency, pool: gpu }",
    );
    expect(problems(conc)).toEqual([
      "f0.yaml:descriptors[0].rate_limit.pool: does not apply to algorithm concurrency (a pool sheds and lends rate)",
    ]);
  });

  it("check-config's summary names each rule's pool and each pool's thresholds", () => {
    const lines = formatSummary(config).split("\n");
    expect(lines).toContain("    api/model  token_bucket 100 requests per 1s [pool gpu]");
    expect(lines).toContain("  pool gpu: target 0.8, idle below 0.5");
    expect(lines).toContain("  pool cpu: target 0.7, idle below 0.5");
  });

  it("a fair-share group in a pool: the group's and the tenant's counters keep their keys, both placed by the pool's", () => {
    const text = `domain: ai
pools:
  gpu: { target: 0.8 }
descriptors:
  - key: group
    rate_limit: { unit: second, requests_per_unit: 100, fair_share: { by: tenant }, pool: gpu }
    descriptors:
      - key: tenant
        rate_limit: { unit: second, requests_per_unit: 10 }
`;
    const c = compileSources([{ file: "f.yaml", text }]);
    const r = c.resolve("ai", [
      { key: "group", value: "g" },
      { key: "tenant", value: "t" },
    ])!;
    expect([r.counterKey, r.shardKey]).toEqual(["ai/group=g/tenant=t", "pool/gpu"]);
    expect([r.parent?.counterKey, r.parent?.shardKey, r.parent?.rule.pool?.name]).toEqual([
      "ai/group=g",
      "pool/gpu",
      "gpu",
    ]);
  });
});
