import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import {
  type DescriptorEntry,
  diffConfigs,
  formatSummary,
  type LimitConfig,
  loadConfig,
  type Resolved,
  resolveKey,
} from "../../src/config/index.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/** `fair_share`, `reserve` and `soft` in `rate_limit`, and how a descriptor under a fair-share limit resolves. */

const FILE = "test/config/fixtures/good/fair-share.yaml";
const config = loadConfig(FILE);

function d(...pairs: [string, string][]): DescriptorEntry[] {
  return pairs.map(([key, value]) => ({ key, value }));
}

function resolve(...pairs: [string, string][]): Resolved | undefined {
  return config.resolve("fair", d(...pairs));
}

function ruleAt(...pairs: [string, string][]) {
  const r = resolve(...pairs);
  if (!r) throw new Error(`no rule for ${JSON.stringify(pairs)}`);
  return r.rule;
}

const groupRule = () => config.rules.find((r) => r.name === "group_rpm")!;

describe("parsing", () => {
  it("reads fair_share into { by, weights } with the weights as a map", () => {
    const g = groupRule();
    expect(g.fairShare?.by).toBe("tenant");
    expect(g.fairShare?.weights).toBeInstanceOf(Map);
    expect([...g.fairShare!.weights]).toEqual([
      ["gold", 3],
      ["silver", 1.5],
      ["007", 2],
    ]);
  });

  it("fair_share without weights has an empty map (every value weighs 1)", () => {
    const pool = ruleAt(["pool", "p"]);
    expect(pool.fairShare?.by).toBe("user");
    expect(pool.fairShare?.weights.size).toBe(0);
  });

  it("reads reserve", () => {
    expect(groupRule().reserve).toEqual({ critical: 0.2, high: 0.1 });
  });

  it("reads soft, false by default", () => {
    expect(ruleAt(["group", "g"], ["tenant", "t"]).soft).toBe(true);
    expect(groupRule().soft).toBe(false);
    expect(ruleAt(["group", "g"], ["tenant", "t"], ["model", "m"]).soft).toBe(false);
  });

  it("leaves fair_share and reserve out of rules that do not set them", () => {
    const plain = ruleAt(["plain", "p"]);
    expect("fairShare" in plain).toBe(false);
    expect("reserve" in plain).toBe(false);
    expect(plain.soft).toBe(false);
  });

  it("freezes what it read", () => {
    const g = groupRule();
    expect(Object.isFrozen(g.fairShare)).toBe(true);
    expect(Object.isFrozen(g.reserve)).toBe(true);
  });

  it("makes a fair_share node a shard-key node: the group and its tenants share one owner", () => {
    const group = resolve(["group", "g1"]);
    const tenant = resolve(["group", "g1"], ["tenant", "t1"]);
    expect(group?.shardKey).toBe("fair/group=g1");
    expect(tenant?.shardKey).toBe("fair/group=g1");
    expect(resolve(["pool", "p"], ["user", "vip"])?.shardKey).toBe("fair/pool=p");
  });
});

describe("resolution under a fair_share limit", () => {
  it("a tenant with a rule of its own carries the group's charge as parent", () => {
    const r = resolve(["group", "g1"], ["tenant", "t1"]);
    expect(r).toEqual({
      rule: ruleAt(["group", "g1"], ["tenant", "t1"]),
      counterKey: "fair/group=g1/tenant=t1",
      shardKey: "fair/group=g1",
      parent: {
        rule: groupRule(),
        counterKey: "fair/group=g1",
        shardKey: "fair/group=g1",
        subject: { id: "t1", weight: 1 },
      },
    });
    expect(r?.parent?.rule).toBe(groupRule());
  });

  it("gives each subject its weight, 1 when not listed", () => {
    expect(resolve(["group", "g1"], ["tenant", "gold"])?.parent?.subject).toEqual({ id: "gold", weight: 3 });
    expect(resolve(["group", "g1"], ["tenant", "silver"])?.parent?.subject).toEqual({
      id: "silver",
      weight: 1.5,
    });
    // A numeric-looking value is matched as written, as descriptor values are.
    expect(resolve(["group", "g1"], ["tenant", "007"])?.parent?.subject).toEqual({ id: "007", weight: 2 });
    expect(resolve(["group", "g1"], ["tenant", "nobody"])?.parent?.subject).toEqual({
      id: "nobody",
      weight: 1,
    });
  });

  it("a tenant with no rule of its own is charged to the group, attributed to the tenant", () => {
    expect(resolve(["group", "g1"], ["tenant", "free"])).toEqual({
      rule: groupRule(),
      counterKey: "fair/group=g1",
      shardKey: "fair/group=g1",
      subject: { id: "free", weight: 1 },
    });
    const pool = ruleAt(["pool", "p"]);
    expect(resolve(["pool", "p"], ["user", "u1"])).toEqual({
      rule: pool,
      counterKey: "fair/pool=p",
      shardKey: "fair/pool=p",
      subject: { id: "u1", weight: 1 },
    });
  });

  it("a deeper descriptor keeps the parent of the tenant it passed through", () => {
    const model = resolve(["group", "g1"], ["tenant", "gold"], ["model", "m"]);
    expect(model?.rule.limit).toBe(500);
    expect(model?.counterKey).toBe("fair/group=g1/tenant=gold/model=m");
    expect(model?.shardKey).toBe("fair/group=g1");
    expect(model?.parent).toEqual({
      rule: groupRule(),
      counterKey: "fair/group=g1",
      shardKey: "fair/group=g1",
      subject: { id: "gold", weight: 3 },
    });
    // Reaching a node without a rule, deeper: still the group's charge.
    expect(resolve(["group", "g1"], ["tenant", "gold"], ["region", "eu"])).toEqual({
      rule: groupRule(),
      counterKey: "fair/group=g1",
      shardKey: "fair/group=g1",
      subject: { id: "gold", weight: 3 },
    });
  });

  it("key-only tenants each get their own counter and the same group counter", () => {
    const a = resolve(["group", "g1"], ["tenant", "a"]);
    const b = resolve(["group", "g1"], ["tenant", "b"]);
    expect(a?.counterKey).not.toBe(b?.counterKey);
    expect(a?.parent?.counterKey).toBe(b?.parent?.counterKey);
    expect(resolve(["group", "g2"], ["tenant", "a"])?.parent?.counterKey).toBe("fair/group=g2");
  });

  it("share_threshold tenants share one counter and count as one subject, named by the pattern", () => {
    const a = resolve(["group", "g1"], ["tenant", "trial-1"]);
    const b = resolve(["group", "g1"], ["tenant", "trial-2"]);
    expect(a?.rule.limit).toBe(60);
    expect(a?.counterKey).toBe("fair/group=g1/tenant=trial-*");
    expect(b).toEqual(a);
    expect(a?.parent).toEqual({
      rule: groupRule(),
      counterKey: "fair/group=g1",
      shardKey: "fair/group=g1",
      subject: { id: "trial-*", weight: 1 },
    });
  });

  it("without a `by` entry next, or without fair_share, nothing changes", () => {
    expect(resolve(["group", "g1"])).toEqual({
      rule: groupRule(),
      counterKey: "fair/group=g1",
      shardKey: "fair/group=g1",
    });
    const other = resolve(["group", "g1"], ["other", "x"]);
    expect(other?.rule.limit).toBe(5);
    expect(other && "parent" in other).toBe(false);
    expect(resolve(["plain", "p"], ["tenant", "t"])).toEqual({
      rule: ruleAt(["plain", "p"], ["tenant", "t"]),
      counterKey: "fair/plain=p/tenant=t",
      shardKey: "fair/plain=p",
    });
  });

  it("a miss below the group is still a miss (no backtracking, as in Envoy)", () => {
    expect(resolve(["group", "g1"], ["tenant", "t1"], ["nope", "x"])).toBeUndefined();
    expect(resolve(["group", "g1"], ["nope", "x"])).toBeUndefined();
    expect(resolve(["group", "g1"], ["tenant", "free"], ["model", "m"])).toBeUndefined();
  });

  it("escapes separators in the group's counter key like any counter key", () => {
    const r = resolve(["group", "a/b=c"], ["tenant", "t/1"]);
    expect(r?.counterKey).toBe("fair/group=a%2Fb%3Dc/tenant=t%2F1");
    expect(r?.parent?.counterKey).toBe("fair/group=a%2Fb%3Dc");
    expect(r?.parent?.subject?.id).toBe("t/1");
  });

  it("resolving a tenant's counter key again gives the same parent", () => {
    for (const pairs of [
      [
        ["group", "g1"],
        ["tenant", "gold"],
      ],
      [
        ["group", "g1"],
        ["tenant", "trial-9"],
      ],
      [
        ["group", "g1"],
        ["tenant", "t"],
        ["model", "m"],
      ],
      [
        ["pool", "p"],
        ["user", "vip"],
      ],
    ] as [string, string][][]) {
      const r = resolve(...pairs);
      expect(r?.parent).toBeDefined();
      expect(resolveKey(config, r!.counterKey)).toEqual(r);
    }
    // A group charge's counter key is the group's own: it names no tenant, so it resolves to the
    // group's rule without a subject. Attribution needs the descriptor's key, not the counter's.
    const free = resolve(["group", "g1"], ["tenant", "free"]);
    expect(resolveKey(config, free!.counterKey)).toEqual(resolve(["group", "g1"]));
    expect(resolveKey(config, "fair/group=g1/tenant=free")).toEqual(free);
    const value = fc.string({ maxLength: 12 });
    fc.assert(
      fc.property(value, value, (g, t) => {
        const r = resolve(["group", g], ["tenant", t]);
        expect(r).toBeDefined();
        expect(resolveKey(config, r!.counterKey)).toEqual(r);
      }),
    );
  });
});

describe("check-config and diff", () => {
  it("the summary names fair_share, reserve and soft", () => {
    const summary = formatSummary(config);
    expect(summary).toContain(
      "fair/group#group_rpm  fixed_window 6000 requests per 1m, fair share by tenant (3 weights), reserve critical 20% high 10%",
    );
    expect(summary).toContain("fair/pool  fixed_window 100 requests per 1s, fair share by user\n");
    expect(summary).toContain("fair/group/tenant  fixed_window 2000 requests per 1m [soft]");
  });

  const dir = tempDir("shardlimit-fair-");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const load = (text: string): LimitConfig => {
    const file = join(dir, `c${n++}.yaml`);
    writeFileSync(file, text);
    return loadConfig(file);
  };
  const base = (rateLimit: string, child = "{ unit: minute, requests_per_unit: 10 }") =>
    `domain: d\ndescriptors:\n  - key: g\n    rate_limit: { unit: minute, requests_per_unit: 100${rateLimit} }\n    descriptors:\n      - key: t\n        rate_limit: ${child}\n`;

  it("a changed fair_share, reserve or soft is a changed rule; reordered weights are not", () => {
    const prev = load(base(", fair_share: { by: t, weights: { a: 2, b: 3 } }"));
    const changed = (next: LimitConfig) => diffConfigs(prev, next).rulesChanged;
    expect(changed(load(base(", fair_share: { by: t, weights: { b: 3, a: 2 } }")))).toEqual([]);
    expect(changed(load(base(", fair_share: { by: t, weights: { a: 2, b: 4 } }")))).toEqual(["d/g"]);
    expect(changed(load(base(", fair_share: { by: t }")))).toEqual(["d/g"]);
    expect(changed(load(base("")))).toEqual(["d/g"]);
    expect(
      changed(load(base(", fair_share: { by: t, weights: { a: 2, b: 3 } }, reserve: { critical: 0.1 }"))),
    ).toEqual(["d/g"]);
    expect(
      changed(
        load(
          base(
            ", fair_share: { by: t, weights: { a: 2, b: 3 } }",
            "{ unit: minute, requests_per_unit: 10, soft: true }",
          ),
        ),
      ),
    ).toEqual(["d/g/t"]);
  });

  it("refuses more than 10,000 weights, naming the count", () => {
    const weights = Array.from({ length: 10_001 }, (_, i) => `          t${i}: 1`).join("\n");
    const text = `domain: d\ndescriptors:\n  - key: g\n    rate_limit:\n      unit: minute\n      requests_per_unit: 100\n      fair_share:\n        by: t\n        weights:\n${weights}\n    descriptors:\n      - key: t\n`;
    const file = join(dir, "many-weights.yaml");
    writeFileSync(file, text);
    // One load each way: the YAML parser's duplicate-key check makes a 10,000-key map take about
    // a second to read (quadratic in the keys), several on a loaded machine.
    let thrown: unknown;
    try {
      loadConfig(file);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).message).toContain(
      `${file}:9: descriptors[0].rate_limit.fair_share.weights: has 10001 entries; at most 10000`,
    );
    // 10,000 is fine.
    const ok = text.replace(/\n {10}t10000: 1/, "");
    writeFileSync(file, ok);
    expect(loadConfig(file).rules[0]?.fairShare?.weights.size).toBe(10_000);
  }, 60_000);

  it("refuses soft: true on unlimited and concurrency rules, and an empty reserve", () => {
    const problems = (text: string) => {
      const file = join(dir, `p${n++}.yaml`);
      writeFileSync(file, text);
      try {
        loadConfig(file);
      } catch (err) {
        return (err as ConfigError).problems.map((p) => `${p.line} ${p.path}: ${p.message}`);
      }
      return [];
    };
    const child = (rateLimit: string) =>
      `domain: d\ndescriptors:\n  - key: g\n    rate_limit: { unit: minute, requests_per_unit: 100, fair_share: { by: t } }\n    descriptors:\n      - key: t\n        rate_limit: ${rateLimit}\n`;
    expect(problems(child("{ unlimited: true, soft: true }"))).toEqual([
      "7 descriptors[0].descriptors[0].rate_limit.soft: has no effect on an unlimited rule (unlimited: true); remove it",
    ]);
    expect(problems(child("{ algorithm: concurrency, requests_per_unit: 3, soft: true }"))).toEqual([
      "7 descriptors[0].descriptors[0].rate_limit.soft: does not apply to algorithm concurrency: soft borrows a rate, and a concurrency limit counts slots held, not a rate over a window",
    ]);
    // soft: false says nothing, so it is accepted anywhere.
    expect(problems(child("{ unlimited: true, soft: false }"))).toEqual([]);
    expect(problems(base(", reserve: {}"))).toEqual([
      "4 descriptors[0].rate_limit.reserve: is empty: name the classes to keep a share for (critical, high, normal), or remove it",
    ]);
  });

  it("collects every fair_share problem of one rule", () => {
    const file = join(dir, "several.yaml");
    writeFileSync(
      file,
      "domain: d\ndescriptors:\n  - key: g\n    rate_limit:\n      algorithm: concurrency\n      requests_per_unit: 5\n      fair_share: { by: u, weights: { a: -1 }, extra: 1 }\n      reserve: { low: 0.5 }\n    descriptors:\n      - key: t\n",
    );
    try {
      loadConfig(file);
      expect.unreachable();
    } catch (err) {
      const problems = (err as ConfigError).problems.map((p) => [p.line, p.path]);
      expect(problems).toEqual(
        expect.arrayContaining([
          [7, "descriptors[0].rate_limit.fair_share"],
          [7, "descriptors[0].rate_limit.fair_share.extra"],
          [7, "descriptors[0].rate_limit.fair_share.weights.a"],
          [7, "descriptors[0].rate_limit.fair_share.by"],
          [8, "descriptors[0].rate_limit.reserve.low"],
          [8, "descriptors[0].rate_limit.reserve"],
        ]),
      );
    }
  });
});
