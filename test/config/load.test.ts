import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  checkConfig,
  type DescriptorEntry,
  formatSummary,
  type LimitRule,
  loadConfig,
  parseDuration,
} from "../../src/config/index.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

const GOOD = "test/config/fixtures/good";

function d(...pairs: [string, string][]): DescriptorEntry[] {
  return pairs.map(([key, value]) => ({ key, value }));
}

function rule(domain: string, ...pairs: [string, string][]): LimitRule {
  const config = loadConfig(
    domain === "api" || domain === "messaging" ? "examples/config.yaml" : `${GOOD}/extensions.yaml`,
  );
  const r = config.resolve(domain, d(...pairs));
  if (!r) throw new Error(`no rule for ${JSON.stringify(pairs)}`);
  return r.rule;
}

describe("extension fields and defaults", () => {
  it("an Envoy rule gets Envoy's behaviour: fixed window of one unit", () => {
    const r = rule("ext", ["upper", "x"]);
    expect(r).toMatchObject({
      algorithm: "fixed_window",
      limit: 7,
      unit: "hour",
      windowMs: 3_600_000,
      burst: 7,
      costUnit: "requests",
      unlimited: false,
      shadowMode: false,
      replaces: [],
      localAllowance: 1,
      failMode: "open",
      leaseTimeoutMs: 30_000,
      source: { file: `${GOOD}/extensions.yaml`, path: "descriptors[2]" },
    });
  });

  it("reads algorithm, burst, local_allowance and fail_mode", () => {
    expect(rule("ext", ["group", "g"], ["tenant", "t"])).toMatchObject({
      algorithm: "token_bucket",
      limit: 10,
      windowMs: 1000,
      burst: 50,
      localAllowance: 0,
      failMode: "closed",
    });
  });

  it("a window without a unit reports the largest unit dividing it", () => {
    expect(rule("ext", ["group", "g"], ["tenant", "t"], ["model", "m"])).toMatchObject({
      windowMs: 120_000,
      unit: "minute",
      costUnit: "tokens",
    });
    expect(rule("ext", ["odd_window", "x"])).toMatchObject({ windowMs: 90_000, unit: "second" });
  });

  it("concurrency needs no unit and reads lease_timeout", () => {
    expect(rule("ext", ["inflight", "t"])).toMatchObject({
      algorithm: "concurrency",
      limit: 4,
      leaseTimeoutMs: 90_000,
    });
  });

  it("reads numeric keys and values as written", () => {
    expect(rule("ext", ["007", "007"]).limit).toBe(1);
  });

  it("follows YAML anchors, aliases and merge keys", () => {
    const config = loadConfig(`${GOOD}/anchors.yaml`);
    expect(config.resolve("anchors", d(["a", "1"]))?.rule.limit).toBe(10);
    expect(config.resolve("anchors", d(["b", "1"]))?.rule.limit).toBe(10);
    expect(config.resolve("anchors", d(["c", "1"]))?.rule).toMatchObject({ limit: 99, unit: "second" });
  });

  it("a domain with no descriptors is valid and limits nothing", () => {
    const config = loadConfig(`${GOOD}/empty-descriptors.yaml`);
    expect(config.domains).toEqual(["nothing_yet"]);
    expect(config.resolve("nothing_yet", d(["a", "b"]))).toBeUndefined();
  });
});

describe("examples/config.yaml", () => {
  const config = loadConfig("examples/config.yaml");

  it("loads every domain", () => {
    expect(config.domains).toEqual(["api", "messaging", "inference"]);
    expect(config.files).toEqual(["examples/config.yaml"]);
  });

  it("does what its comments say", () => {
    expect(rule("api", ["tenant", "t1"])).toMatchObject({
      algorithm: "token_bucket",
      limit: 100,
      burst: 200,
    });
    const group = config.resolve("api", d(["group", "acme"]));
    const tenant = config.resolve("api", d(["group", "acme"], ["tenant", "acme-eu"]));
    expect(group?.rule.limit).toBe(6000);
    expect(tenant?.rule.limit).toBe(1000);
    expect(tenant?.shardKey).toBe(group?.shardKey);
    const trialA = config.resolve("api", d(["group", "acme"], ["tenant", "trial-1"]));
    const trialB = config.resolve("api", d(["group", "acme"], ["tenant", "trial-2"]));
    expect(trialA?.rule.limit).toBe(60);
    expect(trialA?.counterKey).toBe(trialB?.counterKey);
    expect(rule("api", ["model", "small"], ["tenant", "t"])).toMatchObject({
      costUnit: "tokens",
      limit: 200_000,
    });
    expect(rule("api", ["model", "large"], ["tenant", "t"])).toMatchObject({
      windowMs: 10_000,
      failMode: "closed",
    });
    expect(rule("api", ["in_flight", "completions"], ["tenant", "t"])).toMatchObject({
      algorithm: "concurrency",
      limit: 8,
    });
    expect(rule("api", ["remote_address", "203.0.113.7"]).shadowMode).toBe(true);
    expect(rule("api", ["remote_address", "10.0.0.10"]).unlimited).toBe(true);
    expect(rule("messaging", ["to_number", "1"]).limit).toBe(100);
  });

  it("shares a customer's tokens fairly among its teams in the inference domain", () => {
    const team = config.resolve("inference", d(["group", "acme"], ["tenant", "research"]));
    expect(team?.rule).toMatchObject({ limit: 800_000, costUnit: "tokens", soft: true });
    expect(team?.shardKey).toBe("inference/group=acme");
    expect(team?.parent).toMatchObject({
      counterKey: "inference/group=acme",
      subject: { id: "research", weight: 3 },
      rule: { name: "group_tokens", limit: 2_000_000, reserve: { critical: 0.2 } },
    });
    const other = config.resolve("inference", d(["group", "acme"], ["tenant", "ops"]));
    expect(other?.parent?.subject).toEqual({ id: "ops", weight: 1 });
  });
});

describe("files and directories", () => {
  const dir = tempDir("shardlimit-config-");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads *.yaml and *.yml sorted by name, skipping dotfiles and other files", () => {
    const sub = join(dir, "mixed");
    const limit = (domain: string) =>
      `domain: ${domain}\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n`;
    mkdirSync(sub);
    writeFileSync(join(sub, "b.yml"), limit("b"));
    writeFileSync(join(sub, "a.yaml"), limit("a"));
    writeFileSync(join(sub, ".#a.yaml"), "this: is [not valid");
    writeFileSync(join(sub, "README.md"), "# not config");
    const config = loadConfig(sub);
    expect(config.domains).toEqual(["a", "b"]);
    expect(config.files).toEqual([join(sub, "a.yaml"), join(sub, "b.yml")]);
  });

  it("reads several documents in one file, ignoring a trailing ---", () => {
    const file = join(dir, "multi.yaml");
    writeFileSync(file, "domain: one\n---\ndomain: two\n---\n");
    expect(loadConfig(file).domains).toEqual(["one", "two"]);
  });

  it("accepts units in any case, as Envoy does", () => {
    const file = join(dir, "upper.yaml");
    writeFileSync(
      file,
      "domain: u\ndescriptors:\n  - key: k\n    rate_limit: {unit: MINUTE, requests_per_unit: 3}\n",
    );
    expect(loadConfig(file).resolve("u", d(["k", "v"]))?.rule.unit).toBe("minute");
  });
});

describe("checkConfig", () => {
  it("summarises a valid config", () => {
    const result = checkConfig("examples/config.yaml");
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.summary).toBe(formatSummary(result.config));
    expect(result.summary.split("\n")[0]).toBe("3 domains, 15 rules from 1 file");
    expect(result.summary).toContain("  api: 11 rules");
    expect(result.summary).toContain("  messaging: 2 rules");
    expect(result.summary).toContain("  inference: 2 rules");
    expect(result.summary).toContain("api/tenant#tenant_rps  token_bucket 100 requests per 1s (burst 200)");
  });

  it("lists every problem of an invalid config", () => {
    const result = checkConfig("test/config/fixtures/bad/many-problems.yaml");
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.problems).toHaveLength(4);
  });
});

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["10s", 10_000],
    ["1.5s", 1500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["1d", 86_400_000],
    ["1m30s", 90_000],
  ])("%s is %i ms", (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(["", "10", "10 s", "s", "1.5ms", "-1s", "1w", "10sec"])("rejects %j", (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});
