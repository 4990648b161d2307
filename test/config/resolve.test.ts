import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type DescriptorEntry, encodeKey, loadConfig, resolveKey } from "../../src/config/index.js";

const GOOD = "test/config/fixtures/good";

function d(...pairs: [string, string][]): DescriptorEntry[] {
  return pairs.map(([key, value]) => ({ key, value }));
}

describe("wildcards", () => {
  const config = loadConfig(`${GOOD}/wildcards.yaml`);
  const storage = (path: string) => config.resolve("files", d(["service", "storage"], ["path", path]));

  it("prefers an exact value, then the first matching wildcard in file order, then key-only", () => {
    expect(storage("/api/files/big")?.rule.limit).toBe(1);
    // Both "/api/files*" and "/api/*" match; Envoy takes the first listed, not the longest.
    expect(storage("/api/files/small")?.rule.limit).toBe(10);
    expect(storage("/api/users")?.rule.limit).toBe(20);
    expect(storage("/elsewhere")?.rule.limit).toBe(100);
  });

  it("applies wildcards at nested levels", () => {
    expect(storage("/api/filesystem")?.rule.limit).toBe(10);
  });

  it("counts each matching value separately by default", () => {
    expect(storage("/api/files/a")?.counterKey).toBe(
      encodeKey("files", d(["service", "storage"], ["path", "/api/files/a"])),
    );
    expect(storage("/api/files/a")?.counterKey).not.toBe(storage("/api/files/b")?.counterKey);
  });

  it("shares one counter across values with share_threshold", () => {
    const a = storage("/shared/a");
    const b = storage("/shared/b");
    expect(a?.rule.limit).toBe(5);
    expect(a?.counterKey).toBe(encodeKey("files", d(["service", "storage"], ["path", "/shared/*"])));
    expect(b?.counterKey).toBe(a?.counterKey);
    // The shared key resolves back to the same rule.
    const back = resolveKey(config, a!.counterKey);
    expect(typeof back === "object" && back.rule.id).toBe(a?.rule.id);
  });

  it("a bare * matches any value, before a key-only node", () => {
    expect(config.resolve("files", d(["client", "anything"]))?.rule.limit).toBe(7);
    expect(config.resolve("files", d(["client", ""]))?.rule.limit).toBe(7);
  });
});

describe("shard keys", () => {
  const config = loadConfig(`${GOOD}/extensions.yaml`);

  it("places a group's limit and its tenants' limits on the group's key", () => {
    const group = config.resolve("ext", d(["group", "g1"]));
    const tenant = config.resolve("ext", d(["group", "g1"], ["tenant", "t1"]));
    const model = config.resolve("ext", d(["group", "g1"], ["tenant", "t1"], ["model", "m"]));
    expect(group?.shardKey).toBe("ext/group=g1");
    expect(tenant?.shardKey).toBe("ext/group=g1");
    expect(model?.shardKey).toBe("ext/group=g1");
    expect(tenant?.counterKey).toBe("ext/group=g1/tenant=t1");
    expect(config.resolve("ext", d(["group", "g2"], ["tenant", "t1"]))?.shardKey).toBe("ext/group=g2");
  });

  it("without shard_key, the shard key is the counter key", () => {
    const r = config.resolve("ext", d(["inflight", "t1"]));
    expect(r?.shardKey).toBe(r?.counterKey);
    expect(r?.shardKey).toBe("ext/inflight=t1");
  });

  it("escapes separators inside values in both keys", () => {
    const r = config.resolve("ext", d(["group", "a/b=c"], ["tenant", "t"]));
    expect(r?.shardKey).toBe("ext/group=a%2Fb%3Dc");
    expect(r?.counterKey).toBe("ext/group=a%2Fb%3Dc/tenant=t");
  });
});

describe("resolveKey", () => {
  const config = loadConfig(`${GOOD}/extensions.yaml`);

  it("resolves a canonical key like the descriptor it encodes", () => {
    const r = resolveKey(config, "ext/group=g1/tenant=t1");
    expect(typeof r).toBe("object");
    expect(r).toEqual(config.resolve("ext", d(["group", "g1"], ["tenant", "t1"])));
  });

  it("returns undefined when no limit applies and a message for a malformed key", () => {
    expect(resolveKey(config, "ext/nothing=here")).toBeUndefined();
    expect(resolveKey(config, "other/group=g1")).toBeUndefined();
    expect(resolveKey(config, "ext")).toMatch(/no descriptor entries/);
    expect(resolveKey(config, "ext/group")).toMatch(/not key=value/);
    expect(resolveKey(config, "/group=g1")).toMatch(/empty domain/);
  });

  it("round-trips: resolving a resolved counter key gives the same rule and keys", () => {
    const value = fc.string({ maxLength: 12 });
    fc.assert(
      fc.property(value, value, (g, t) => {
        const r = config.resolve("ext", d(["group", g], ["tenant", t]));
        expect(r).toBeDefined();
        expect(resolveKey(config, r!.counterKey)).toEqual(r);
      }),
    );
  });
});

describe("rules", () => {
  const config = loadConfig(`${GOOD}/extensions.yaml`);

  it("have stable, unique ids and are found by id", () => {
    const ids = config.rules.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toContain("ext/group#group_limit");
    expect(ids).toContain("ext/group/tenant/model");
    expect(ids).toContain("ext/007=007");
    for (const r of config.rules) expect(config.ruleById(r.id)).toBe(r);
    expect(config.ruleById("ext/nope")).toBeUndefined();
    expect(loadConfig(`${GOOD}/extensions.yaml`).rules.map((r) => r.id)).toEqual(ids);
  });

  it("are immutable", () => {
    const rule = config.rules[0]!;
    expect(Object.isFrozen(rule)).toBe(true);
    expect(() => {
      (rule as { limit: number }).limit = 1;
    }).toThrow(TypeError);
  });
});

// Resolution speed is measured in bench/ (`npm run bench:resolve`), not asserted here.
