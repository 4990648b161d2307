import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import { loadConfig } from "../../src/config/load.js";
import { bucketDescriptor, loadRlqsConfig, parseRlqsConfig } from "../../src/config/rlqs.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";

const GOOD = `
rlqs:
  mappings:
    - domain: envoy
      match: { name: api }
      limit_domain: api
      descriptors:
        - { key: tenant, bucket_key: tenant }
        - { key: route, value: /v1 }
    - domain: envoy
      descriptors:
        - { key: any, bucket_key: name }
  unmatched: deny_all
  report_interval: 250ms
  max_buckets_per_stream: 10
  max_streams: 5
  abandon_after: 30s
`;

function problems(text: string): string[] {
  try {
    parseRlqsConfig("rlqs.yaml", text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).message.split("\n");
  }
  throw new Error("parsed");
}

describe("the rlqs: mapping file", () => {
  it("reads every field, with defaults for the rest", () => {
    const c = parseRlqsConfig("rlqs.yaml", GOOD);
    expect(c).toMatchObject({
      unmatched: "deny_all",
      reportIntervalMs: 250,
      maxBucketsPerStream: 10,
      maxStreams: 5,
      abandonAfterMs: 30_000,
    });
    expect(c.mappings[0]).toEqual({
      domain: "envoy",
      match: { name: "api" },
      limitDomain: "api",
      descriptors: [
        { key: "tenant", bucketKey: "tenant", value: undefined },
        { key: "route", value: "/v1", bucketKey: undefined },
      ],
    });
    const d = parseRlqsConfig(
      "r.yaml",
      "rlqs:\n  mappings:\n    - { domain: d, descriptors: [{ key: k, value: v }] }\n",
    );
    expect(d).toMatchObject({
      unmatched: "allow_all",
      reportIntervalMs: 100,
      maxBucketsPerStream: 1000,
      maxStreams: 1000,
    });
    expect(d.mappings[0]!.limitDomain).toBe("d");
  });

  it("maps a bucket id by the first mapping whose domain, match and bucket keys it has", () => {
    const c = parseRlqsConfig("rlqs.yaml", GOOD);
    expect(bucketDescriptor(c, "envoy", { name: "api", tenant: "acme" })).toEqual({
      domain: "api",
      entries: [
        { key: "tenant", value: "acme" },
        { key: "route", value: "/v1" },
      ],
    });
    // No tenant: the first mapping does not take it; the second does.
    expect(bucketDescriptor(c, "envoy", { name: "api" })).toEqual({
      domain: "envoy",
      entries: [{ key: "any", value: "api" }],
    });
    expect(bucketDescriptor(c, "other", { name: "api", tenant: "acme" })).toBeUndefined();
    expect(bucketDescriptor(c, "envoy", { tenant: "acme" })).toBeUndefined();
    // Keys inherited from Object.prototype are not bucket entries.
    const proto = parseRlqsConfig(
      "r.yaml",
      "rlqs:\n  mappings:\n    - { domain: d, descriptors: [{ key: k, bucket_key: toString }] }\n",
    );
    expect(bucketDescriptor(proto, "d", { name: "x" })).toBeUndefined();
  });

  it("refuses bad fields, naming the file, the field and its line", () => {
    expect(problems("rlqs:\n  mappings: []\n")).toEqual([
      "rlqs.yaml:2: rlqs.mappings: must list at least one mapping",
    ]);
    const p = problems(`rlqs:
  mappings:
    - domain: envoy
      descriptors:
        - { key: tenant }
        - { key: t, value: a, bucket_key: b }
    - domain: ""
      descriptors: []
  report_interval: 5
  max_streams: 0
  colour: blue
`);
    expect(p).toEqual(
      expect.arrayContaining([
        "rlqs.yaml:5: rlqs.mappings[0].descriptors[0]: give exactly one of value and bucket_key",
        "rlqs.yaml:6: rlqs.mappings[0].descriptors[1]: give exactly one of value and bucket_key",
        "rlqs.yaml:7: rlqs.mappings[1].domain: must not be empty",
        "rlqs.yaml:8: rlqs.mappings[1].descriptors: must list at least one entry",
        expect.stringMatching(/^rlqs\.yaml:9: rlqs\.report_interval: /),
        expect.stringMatching(/^rlqs\.yaml:10: rlqs\.max_streams: /),
        expect.stringMatching(/^rlqs\.yaml:2: rlqs: .*colour/),
      ]),
    );
    expect(
      problems(
        "rlqs:\n  mappings:\n    - { domain: d, descriptors: [{ key: k, value: v }] }\n  report_interval: 1h\n",
      ),
    ).toEqual([
      'rlqs.yaml:4: rlqs.report_interval: must be a duration from 10ms to 1m (e.g. 100ms), got "1h"',
    ]);
    expect(problems("rlqs: [")[0]).toMatch(/^rlqs\.yaml:1: invalid YAML/);
  });

  it("examples/rlqs.yaml maps a bucket onto a limit of examples/config.yaml", () => {
    const rlqs = loadRlqsConfig(path.join(REPO_ROOT, "examples/rlqs.yaml"));
    const d = bucketDescriptor(rlqs, "envoy", { name: "api", tenant: "acme" })!;
    expect(d).toEqual({ domain: "api", entries: [{ key: "tenant", value: "acme" }] });
    const limits = loadConfig(path.join(REPO_ROOT, "examples/config.yaml"));
    expect(limits.resolve(d.domain, d.entries)).toBeDefined();
    expect(readFileSync(path.join(REPO_ROOT, "README.md"), "utf8")).toContain("examples/rlqs.yaml");
  });

  it("a file that cannot be read is a ConfigError naming it", () => {
    expect(() => loadRlqsConfig("/nonexistent/rlqs.yaml")).toThrow(/\/nonexistent\/rlqs\.yaml: cannot read/);
  });
});
