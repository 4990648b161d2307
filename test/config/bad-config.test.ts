import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import { loadConfig } from "../../src/config/index.js";

const BAD = "test/config/fixtures/bad";

function loadError(path: string): ConfigError {
  try {
    loadConfig(path);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`${path} loaded, but should have been rejected`);
}

// [fixture, line, document path ("" for the whole file), a fragment the message must contain]
const CASES: [string, number, string, string][] = [
  ["bad-unit", 6, "descriptors[0].rate_limit.unit", '"secnd" is not a unit (second, minute, hour'],
  ["negative-rpu", 7, "descriptors[0].rate_limit.requests_per_unit", "must be at least 0, got -5"],
  ["missing-rpu", 6, "descriptors[0].rate_limit.requests_per_unit", "is required"],
  ["unknown-field", 5, "descriptors[0].priority", 'unknown field "priority"'],
  ["typo-field", 7, "descriptors[0].rate_limit.request_per_unit", 'did you mean "requests_per_unit"?'],
  ["invalid-yaml", 5, "", "invalid YAML"],
  ["empty", 1, "", "the file is empty"],
  ["not-a-map", 1, "", "must be a map"],
  ["empty-domain", 1, "domain", "must not be empty"],
  ["missing-domain", 1, "domain", "is required"],
  ["duplicate-descriptor", 8, "descriptors[1]", 'duplicate descriptor: key "database" value "users"'],
  ["duplicate-name", 10, "descriptors[1].rate_limit.name", 'rule name "per_tenant" is already used'],
  ["replaces-unknown", 13, "descriptors[1].rate_limit.replaces[0].name", 'no rule named "per_tenat"'],
  ["replaces-self", 9, "descriptors[0].rate_limit.replaces[0].name", "cannot replace itself"],
  ["bad-algorithm", 5, "descriptors[0].rate_limit.algorithm", '"leaky_bucket" is not an algorithm'],
  ["bad-window", 6, "descriptors[0].rate_limit.window", '"10 seconds" is not a duration'],
  ["window-too-long", 5, "descriptors[0].rate_limit.window", '"400d" is out of range'],
  ["burst-zero", 8, "descriptors[0].rate_limit.burst", "must be at least 1, got 0"],
  ["burst-wrong-algorithm", 8, "descriptors[0].rate_limit.burst", "only applies to algorithm token_bucket"],
  [
    "lease-timeout-wrong-algorithm",
    7,
    "descriptors[0].rate_limit.lease_timeout",
    "only applies to algorithm concurrency",
  ],
  ["bad-fail-mode", 7, "descriptors[0].rate_limit.fail_mode", '"maybe" is not a fail mode (open, closed)'],
  ["absurd-rpu", 6, "descriptors[0].rate_limit.requests_per_unit", "must be at most 4294967295"],
  ["fractional-rpu", 6, "descriptors[0].rate_limit.requests_per_unit", "must be a whole number, got 2.5"],
  ["string-rpu", 6, "descriptors[0].rate_limit.requests_per_unit", 'must be a whole number, got "500"'],
  ["missing-unit", 5, "descriptors[0].rate_limit.unit", "is required"],
  ["unlimited-with-unit", 6, "descriptors[0].rate_limit.unit", "has no effect on an unlimited rule"],
  ["empty-key", 3, "descriptors[0].key", "must not be empty"],
  ["missing-key", 3, "descriptors[0].key", "is required"],
  ["misplaced-shadow-mode", 7, "descriptors[0].rate_limit.shadow_mode", "belongs on the descriptor"],
  ["misplaced-unit", 4, "descriptors[0].unit", "belongs inside the descriptor's rate_limit block"],
  ["bad-shadow-mode", 4, "descriptors[0].shadow_mode", 'must be true or false, got "sometimes"'],
  [
    "share-threshold-without-wildcard",
    5,
    "descriptors[0].share_threshold",
    "only applies to a wildcard value",
  ],
  ["nested-shard-key", 6, "descriptors[0].descriptors[0].shard_key", "already sets shard_key"],
  ["descriptors-not-a-list", 3, "descriptors", "must be a list"],
  ["duplicate-yaml-key", 6, "", "Map keys must be unique"],
  ["nested-bad", 9, "descriptors[0].descriptors[1].rate_limit.unit", '"fortnight" is not a unit'],
  // fair_share, reserve, soft and the reserved `priority` key (issue 12).
  ["fair-share-missing-by", 7, "descriptors[0].rate_limit.fair_share.by", "is required"],
  ["fair-share-empty-by", 7, "descriptors[0].rate_limit.fair_share.by", "must not be empty"],
  [
    "fair-share-by-not-child",
    8,
    "descriptors[0].rate_limit.fair_share.by",
    '"tenant" is not the key of a child descriptor (keys below: user, model)',
  ],
  [
    "fair-share-unknown-field",
    9,
    "descriptors[0].rate_limit.fair_share.weight",
    'unknown field "weight" in fair_share; did you mean "weights"? (allowed: by, weights)',
  ],
  [
    "fair-share-weight-zero",
    11,
    "descriptors[0].rate_limit.fair_share.weights.bronze",
    "must be a number above 0 and at most 1000, got 0",
  ],
  [
    "fair-share-weight-too-big",
    10,
    "descriptors[0].rate_limit.fair_share.weights.gold",
    "must be a number above 0 and at most 1000, got 1001",
  ],
  [
    "fair-share-weight-not-number",
    10,
    "descriptors[0].rate_limit.fair_share.weights.gold",
    'must be a number above 0 and at most 1000, got "3"',
  ],
  [
    "fair-share-weight-infinite",
    10,
    "descriptors[0].rate_limit.fair_share.weights.gold",
    "must be a number above 0 and at most 1000, got .inf",
  ],
  [
    "fair-share-weights-not-a-map",
    9,
    "descriptors[0].rate_limit.fair_share.weights",
    "must be a map of values to weights",
  ],
  ["fair-share-unlimited", 6, "descriptors[0].rate_limit.fair_share", "does not apply to an unlimited rule"],
  [
    "fair-share-concurrency",
    7,
    "descriptors[0].rate_limit.fair_share",
    "does not apply to algorithm concurrency",
  ],
  [
    "fair-share-under-shard-key",
    9,
    "descriptors[0].descriptors[0].shard_key",
    "already sets shard_key (fair_share implies it)",
  ],
  [
    "fair-share-nested",
    13,
    "descriptors[0].descriptors[0].rate_limit.fair_share",
    "already sets shard_key (fair_share implies it)",
  ],
  [
    "reserve-low",
    8,
    "descriptors[0].rate_limit.reserve.low",
    "no class is below low, so there is nothing to reserve from",
  ],
  [
    "reserve-unknown-class",
    7,
    "descriptors[0].rate_limit.reserve.urgent",
    'unknown field "urgent" in reserve (allowed: critical, high, normal)',
  ],
  [
    "reserve-out-of-range",
    8,
    "descriptors[0].rate_limit.reserve.critical",
    "must be a fraction above 0 and below 1, got 1",
  ],
  ["reserve-sum", 7, "descriptors[0].rate_limit.reserve", "add up to 1; they must add up to less than 1"],
  ["reserve-unlimited", 6, "descriptors[0].rate_limit.reserve", "does not apply to an unlimited rule"],
  ["reserve-concurrency", 7, "descriptors[0].rate_limit.reserve", "does not apply to algorithm concurrency"],
  [
    "soft-without-fair-share",
    11,
    "descriptors[0].descriptors[0].rate_limit.soft",
    "soft needs a fair_share limit above it to borrow from",
  ],
  ["soft-not-bool", 10, "descriptors[0].descriptors[0].rate_limit.soft", 'must be true or false, got "yes"'],
  [
    "soft-wrong-key",
    14,
    "descriptors[0].descriptors[1].rate_limit.soft",
    'soft needs a fair_share limit above it to borrow from (the one above is by "tenant", not "user")',
  ],
  // global limits across regions (issue 14)
  [
    "global-concurrency",
    7,
    "descriptors[0].rate_limit.global",
    "does not apply to algorithm concurrency: a region's share of a global limit is a rate",
  ],
  ["global-unlimited", 6, "descriptors[0].rate_limit.global", "has no effect on an unlimited rule"],
  ["global-not-bool", 8, "descriptors[0].rate_limit.global", 'must be true or false, got "everywhere"'],
  [
    "priority-key",
    5,
    "descriptors[0].descriptors[0].key",
    "priority is reserved for the request's priority class",
  ],
];

describe("bad configs: one fixture per mistake", () => {
  it.each(CASES)("%s.yaml: line %i, %s", (name, line, path, fragment) => {
    const file = join(BAD, `${name}.yaml`);
    const err = loadError(file);
    expect(err.code).toBe("CONFIG_INVALID");
    const where = path ? `${file}:${line}: ${path}: ` : `${file}:${line}: `;
    expect(err.message).toContain(where);
    expect(err.message).toContain(fragment);
    const match = err.problems.find((p) => p.file === file && p.line === line && p.path === path);
    expect(match?.message).toContain(fragment);
  });

  it("has a table entry for every fixture", async () => {
    const { readdirSync } = await import("node:fs");
    const names = readdirSync(BAD).map((f) => f.replace(/\.yaml$/, ""));
    const covered = new Set([...CASES.map((c) => c[0]), "many-problems"]);
    expect(names.filter((n) => !covered.has(n))).toEqual([]);
  });

  it("collects every problem in a file, not just the first", () => {
    const file = join(BAD, "many-problems.yaml");
    const err = loadError(file);
    expect(err.problems.map((p) => [p.line, p.path])).toEqual([
      [5, "descriptors[0].rate_limit.unit"],
      [8, "descriptors[1].rate_limt"],
      [13, "descriptors[2].rate_limit.requests_per_unit"],
      [14, "descriptors[2].rate_limit.fail_mode"],
    ]);
  });

  it("rejects two files defining one domain, naming both files", () => {
    const dir = "test/config/fixtures/bad-dir/duplicate-domain";
    const err = loadError(dir);
    expect(err.problems).toHaveLength(1);
    expect(err.message).toContain(`${join(dir, "b.yaml")}:2: domain: domain "shared" is already defined in`);
    expect(err.message).toContain(join(dir, "a.yaml"));
  });

  it("collects problems across the files of a directory", () => {
    const err = loadError(BAD);
    const files = new Set(err.problems.map((p) => p.file));
    expect(files.size).toBeGreaterThanOrEqual(CASES.length);
  });

  it("reports a path that does not exist as a ConfigError", () => {
    const err = loadError("test/config/fixtures/nope.yaml");
    expect(err.message).toBe("test/config/fixtures/nope.yaml: does not exist");
  });

  it("rejects a directory with no YAML files", () => {
    const err = loadError("test/config/fixtures");
    expect(err.message).toContain("has no *.yaml or *.yml files");
  });
});
