import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import {
  type CompileOptions,
  compileSources,
  type DescriptorEntry,
  describeRule,
} from "../../src/config/index.js";

/**
 * envoyproxy/ratelimit parity for the config format: loading (and its error cases), matching,
 * wildcards anywhere in a value, metric names (`detailed_metric`, `value_to_metric`,
 * `share_threshold`), `quota_mode`, `metadata` and merged domains. The cases cover what its own
 * config test suite covers (test/config/config_test.go), written here from the behaviour.
 */

function d(...pairs: [string, string][]): DescriptorEntry[] {
  return pairs.map(([key, value]) => ({ key, value }));
}

function load(files: Record<string, string>, options: CompileOptions = {}) {
  return compileSources(
    Object.entries(files).map(([file, text]) => ({ file, text })),
    options,
  );
}

function problems(files: Record<string, string>, options: CompileOptions = {}): string[] {
  try {
    load(files, options);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
  }
  throw new Error("the config loaded, but should have been refused");
}

const BASIC = `
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit: { unit: second, requests_per_unit: 5 }
      - key: subkey1
        value: subvalue1
        rate_limit: { unit: second, requests_per_unit: 10 }
  - key: key2
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: key2
    value: value2
    rate_limit: { unit: minute, requests_per_unit: 30 }
  - key: key2
    value: value3
    rate_limit: { unlimited: true }
  - key: key3
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: key4
    rate_limit: { unit: day, requests_per_unit: 1 }
  - key: key5
    rate_limit: { unit: week, requests_per_unit: 1 }
  - key: key6
    rate_limit: { unit: month, requests_per_unit: 1 }
  - key: key7
    rate_limit: { unit: year, requests_per_unit: 1 }
`;

describe("envoyproxy/ratelimit conformance: basic config", () => {
  const config = load({ "basic.yaml": BASIC });
  const get = (...pairs: [string, string][]) => config.resolve("test-domain", d(...pairs));

  it("matches nothing for an unknown domain, key or value, or a partial path", () => {
    expect(config.resolve("foo", d(["key1", "value1"]))).toBeUndefined();
    expect(get(["foo", "bar"])).toBeUndefined();
    // key1=value1 has no limit of its own, only children.
    expect(get(["key1", "value1"])).toBeUndefined();
    expect(get(["key1", "other"], ["subkey1", "x"])).toBeUndefined();
  });

  it("prefers key+value over key-only, at any depth", () => {
    expect(get(["key1", "value1"], ["subkey1", "something"])?.rule.limit).toBe(5);
    expect(get(["key1", "value1"], ["subkey1", "subvalue1"])?.rule.limit).toBe(10);
    expect(get(["key2", "something"])?.rule.limit).toBe(20);
    expect(get(["key2", "value2"])?.rule.limit).toBe(30);
  });

  it("does not apply a limit to a request longer than the tree", () => {
    expect(get(["key2", "value2"], ["subkey", "x"])).toBeUndefined();
  });

  it("reads unlimited, and every unit", () => {
    expect(get(["key2", "value3"])?.rule.unlimited).toBe(true);
    const units = ["key3", "key4", "key5", "key6", "key7"].map((k) => get([k, "x"])?.rule.unit);
    expect(units).toEqual(["hour", "day", "week", "month", "year"]);
  });

  it("names metrics as Envoy does: domain.key_value.key", () => {
    const key = (...pairs: [string, string][]) => config.metricKey?.("test-domain", d(...pairs));
    expect(key(["key1", "value1"], ["subkey1", "something"])).toBe("test-domain.key1_value1.subkey1");
    expect(key(["key1", "value1"], ["subkey1", "subvalue1"])).toBe(
      "test-domain.key1_value1.subkey1_subvalue1",
    );
    expect(key(["key2", "x"])).toBe("test-domain.key2");
    expect(key(["key1", "value1"])).toBeUndefined();
  });
});

describe("envoyproxy/ratelimit conformance: config errors", () => {
  const one = (yaml: string) => problems({ "bad.yaml": yaml }).join("\n");

  it("refuses an empty domain, an empty key, a duplicate key and a duplicate domain", () => {
    expect(one("domain: ''\ndescriptors: []")).toMatch(/domain: must not be empty/);
    expect(one("domain: d\ndescriptors:\n  - key: ''\n")).toMatch(/key: must not be empty/);
    expect(
      one(
        "domain: d\ndescriptors:\n  - key: k\n    value: v\n    rate_limit: {unit: second, requests_per_unit: 1}\n  - key: k\n    value: v\n    rate_limit: {unit: second, requests_per_unit: 2}\n",
      ),
    ).toMatch(/duplicate descriptor/);
    const twice = problems({
      "a.yaml": "domain: d\ndescriptors: []",
      "b.yaml": "domain: d\ndescriptors: []",
    });
    expect(twice.join("\n")).toMatch(/domain "d" is already defined in a.yaml/);
  });

  it("refuses a bad unit, a unit on an unlimited rule, and bad replaces", () => {
    expect(
      one("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: foo, requests_per_unit: 1}\n"),
    ).toMatch(/"foo" is not a unit/);
    expect(
      one("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, unlimited: true}\n"),
    ).toMatch(/no effect on an unlimited rule/);
    expect(
      one(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, name: a, replaces: [{name: a}]}\n",
      ),
    ).toMatch(/cannot replace itself/);
    expect(
      one(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{name: ''}]}\n",
      ),
    ).toMatch(/must not be empty/);
  });

  it("refuses bad YAML, misspelled keys, non-string keys and lists of non-maps", () => {
    expect(one("domain: d\ndescriptors:\n  - key: k\n   bad: [")).toMatch(/invalid YAML/);
    expect(one("domain: d\ndescriptors:\n  - key: k\n    ratelimit: {unit: second}\n")).toMatch(
      /unknown field "ratelimit"/,
    );
    expect(
      one("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unt: 1}\n"),
    ).toMatch(/unknown field "requests_per_unt"/);
    expect(one("domain: d\ndescriptors:\n  - key: k\n    123: x\n")).toMatch(/not a plain name/);
    expect(one("domain: d\ndescriptors:\n  - a\n  - b\n")).toMatch(/must be a map/);
  });

  it("refuses share_threshold on a value with no wildcard", () => {
    expect(
      one(
        "domain: d\ndescriptors:\n  - key: k\n    value: plain\n    share_threshold: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
      ),
    ).toMatch(/only applies to a wildcard value/);
  });

  it("refuses metadata that is not a map, and says where a descriptor-level field belongs", () => {
    expect(one("domain: d\ndescriptors:\n  - key: k\n    metadata: [1, 2]\n")).toMatch(
      /metadata: must be a map/,
    );
    expect(
      one(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, quota_mode: true}\n",
      ),
    ).toMatch(/quota_mode belongs on the descriptor/);
  });
});

const WILDCARDS = `
domain: test-domain
descriptors:
  - key: wild
    value: foo*
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: noWild
    value: foo
    rate_limit: { unit: minute, requests_per_unit: 21 }
  - key: noVal
    rate_limit: { unit: minute, requests_per_unit: 22 }
  - key: midWild
    value: bar*b
    rate_limit: { unit: minute, requests_per_unit: 23 }
  - key: multiWild
    value: foo*bar*baz
    rate_limit: { unit: minute, requests_per_unit: 24 }
  - key: nestedWild
    value: val1
    descriptors:
      - key: wild
        value: goo*
        rate_limit: { unit: minute, requests_per_unit: 25 }
  - key: shared
    value: a*z
    share_threshold: true
    rate_limit: { unit: minute, requests_per_unit: 26 }
  - key: files
    value: /docs/*.pdf
    share_threshold: true
    descriptors:
      - key: user
        rate_limit: { unit: minute, requests_per_unit: 27 }
`;

describe("envoyproxy/ratelimit conformance: wildcards", () => {
  const config = load({ "wild.yaml": WILDCARDS });
  const limit = (k: string, v: string) => config.resolve("test-domain", d([k, v]))?.rule.limit;
  const metric = (...pairs: [string, string][]) => config.metricKey?.("test-domain", d(...pairs));

  it("matches a trailing wildcard, and not an exact value by prefix", () => {
    expect(limit("wild", "foo1")).toBe(20);
    expect(limit("wild", "foo")).toBe(20);
    expect(limit("wild", "bar")).toBeUndefined();
    expect(limit("noWild", "foo1")).toBeUndefined();
    expect(config.resolve("test-domain", d(["nestedWild", "val1"], ["wild", "goo2"]))?.rule.limit).toBe(25);
  });

  it("matches a wildcard in the middle, where * may be empty", () => {
    expect(limit("midWild", "barab")).toBe(23);
    expect(limit("midWild", "bar123b")).toBe(23);
    expect(limit("midWild", "barb")).toBe(23);
    expect(limit("midWild", "bara")).toBeUndefined();
    expect(limit("midWild", "xbarb")).toBeUndefined();
  });

  it("matches several wildcards in one value, segments in order", () => {
    expect(limit("multiWild", "foo123bar456baz")).toBe(24);
    expect(limit("multiWild", "foobarbaz")).toBe(24);
    expect(limit("multiWild", "foo123baz")).toBeUndefined();
    expect(limit("multiWild", "bar456baz")).toBeUndefined();
    expect(limit("multiWild", "foobazbar")).toBeUndefined();
    // The middle segment may not overlap the suffix.
    expect(limit("multiWild", "foobaz")).toBeUndefined();
  });

  it("counts each value apart, unless share_threshold makes them share the pattern's counter", () => {
    const a = config.resolve("test-domain", d(["midWild", "bar1b"]))!;
    const b = config.resolve("test-domain", d(["midWild", "bar2b"]))!;
    expect(a.counterKey).not.toBe(b.counterKey);
    const s1 = config.resolve("test-domain", d(["shared", "abz"]))!;
    const s2 = config.resolve("test-domain", d(["shared", "a-long-z"]))!;
    expect(s1.counterKey).toBe(s2.counterKey);
  });

  it("shares a wildcard's counter at an upper level, the levels below still counted by value", () => {
    const at = (file: string, user: string) =>
      config.resolve("test-domain", d(["files", file], ["user", user]))!;
    expect(at("/docs/a.pdf", "u1").rule.limit).toBe(27);
    expect(at("/docs/a.pdf", "u1").counterKey).toBe(at("/docs/sub/b.pdf", "u1").counterKey);
    expect(at("/docs/a.pdf", "u1").counterKey).not.toBe(at("/docs/a.pdf", "u2").counterKey);
    expect(config.resolve("test-domain", d(["files", "/docs/a.txt"], ["user", "u1"]))).toBeUndefined();
    expect(metric(["files", "/docs/a.pdf"], ["user", "u1"])).toBe("test-domain.files_/docs/*.pdf.user");
  });

  it("names a wildcard's metric by its pattern, and a key-only node's by its key", () => {
    expect(metric(["wild", "foo1"])).toBe("test-domain.wild_foo*");
    expect(metric(["nestedWild", "val1"], ["wild", "goo2"])).toBe("test-domain.nestedWild_val1.wild_goo*");
    expect(metric(["midWild", "bar123b"])).toBe("test-domain.midWild_bar*b");
    expect(metric(["multiWild", "foo1bar2baz"])).toBe("test-domain.multiWild_foo*bar*baz");
    expect(metric(["noVal", "foo1"])).toBe("test-domain.noVal");
  });
});

describe("envoyproxy/ratelimit conformance: detailed_metric and value_to_metric", () => {
  const config = load({
    "metrics.yaml": `
domain: d
descriptors:
  - key: detailed
    detailed_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: route
    value_to_metric: true
    descriptors:
      - key: method
        value: GET
        rate_limit: { unit: second, requests_per_unit: 1 }
      - key: user
        rate_limit: { unit: second, requests_per_unit: 1 }
  - key: path
    value: /api/*
    value_to_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: both
    value_to_metric: true
    descriptors:
      - key: x
        detailed_metric: true
        rate_limit: { unit: second, requests_per_unit: 1 }
  - key: team
    value: t*
    share_threshold: true
    detailed_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
`,
  });
  const metric = (...pairs: [string, string][]) => config.metricKey?.("d", d(...pairs));

  it("detailed_metric names the request's values", () => {
    expect(metric(["detailed", "v1"])).toBe("d.detailed_v1");
    expect(metric(["detailed", "v2"])).toBe("d.detailed_v2");
  });

  it("value_to_metric names the request's value at its own level only", () => {
    expect(metric(["route", "r1"], ["method", "GET"])).toBe("d.route_r1.method_GET");
    expect(metric(["route", "r1"], ["user", "bob"])).toBe("d.route_r1.user");
    expect(metric(["path", "/api/users"])).toBe("d.path_/api/users");
  });

  it("detailed_metric wins over value_to_metric; share_threshold keeps the pattern", () => {
    expect(metric(["both", "b1"], ["x", "x1"])).toBe("d.both_b1.x_x1");
    expect(metric(["team", "t1"])).toBe("d.team_t*");
  });
});

describe("envoyproxy/ratelimit conformance: shadow_mode, quota_mode, metadata", () => {
  const config = load({
    "modes.yaml": `
domain: d
descriptors:
  - key: shadow
    shadow_mode: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: quota
    quota_mode: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: meta
    metadata:
      name: service_1
      nested: { list: [1, "two", true], n: 1.5 }
    rate_limit: { unit: second, requests_per_unit: 1 }
`,
  });
  const rule = (k: string) => config.resolve("d", d([k, "v"]))!.rule;

  it("carries each flag to the rule", () => {
    expect(rule("shadow").shadowMode).toBe(true);
    expect(rule("shadow").quotaMode ?? false).toBe(false);
    expect(rule("quota").quotaMode).toBe(true);
    expect(rule("quota").shadowMode).toBe(false);
    expect(rule("meta").metadata).toEqual({ name: "service_1", nested: { list: [1, "two", true], n: 1.5 } });
    // check-config shows the mode.
    expect(describeRule(rule("quota"))).toMatch(/\[quota\]$/);
  });
});

describe("envoyproxy/ratelimit conformance: merged domains (MERGE_DOMAIN_CONFIG)", () => {
  const a = "domain: d\ndescriptors:\n  - key: k1\n    rate_limit: {unit: second, requests_per_unit: 1}\n";
  const b = "domain: d\ndescriptors:\n  - key: k2\n    rate_limit: {unit: second, requests_per_unit: 2}\n";

  it("refuses a domain in two files unless asked to merge, then has the descriptors of both", () => {
    expect(problems({ "a.yaml": a, "b.yaml": b }).join()).toMatch(/already defined/);
    const config = load({ "a.yaml": a, "b.yaml": b }, { mergeDomains: true });
    expect(config.resolve("d", d(["k1", "x"]))?.rule.limit).toBe(1);
    expect(config.resolve("d", d(["k2", "x"]))?.rule.limit).toBe(2);
    expect(config.resolve("d", d(["k2", "x"]))?.rule.source.file).toBe("b.yaml");
  });

  it("still refuses a top-level descriptor defined in both", () => {
    const again = a.replace("requests_per_unit: 1", "requests_per_unit: 3");
    expect(problems({ "a.yaml": a, "c.yaml": again }, { mergeDomains: true }).join()).toMatch(
      /duplicate descriptor in merged domain "d": key "k1" with no value is already defined in a.yaml/,
    );
  });
});
