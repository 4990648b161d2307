import { describe, expect, it } from "vitest";
import { applyReplaces, type DescriptorEntry, loadConfig } from "../../src/config/index.js";

/**
 * envoyproxy/ratelimit's README examples, loaded unchanged from one directory, and the matching
 * the README describes for each. Envoy's matching code is src/config/config_impl.go (GetLimit).
 */
const config = loadConfig("test/config/fixtures/good/envoy-readme");

function d(...pairs: [string, string][]): DescriptorEntry[] {
  return pairs.map(([key, value]) => ({ key, value }));
}

function limitOf(domain: string, entries: DescriptorEntry[]) {
  const r = config.resolve(domain, entries);
  return r && { id: r.rule.id, limit: r.rule.limit, unit: r.rule.unit, counterKey: r.counterKey };
}

describe("envoyproxy/ratelimit README examples", () => {
  it("loads every example from a directory, ignoring non-YAML files", () => {
    expect(config.domains).toEqual([
      "mongo_cps",
      "messaging",
      "edge_proxy_per_ip",
      "example4",
      "internal",
      "example6",
      "example7",
      "example8",
      "example9",
    ]);
    expect(config.files.every((f) => f.endsWith(".yaml"))).toBe(true);
  });

  it("Example 1: key and value select a limit; other values match nothing", () => {
    expect(limitOf("mongo_cps", d(["database", "users"]))).toMatchObject({ limit: 500, unit: "second" });
    expect(limitOf("mongo_cps", d(["database", "default"]))).toMatchObject({ limit: 500 });
    expect(limitOf("mongo_cps", d(["database", "orders"]))).toBeUndefined();
    expect(limitOf("mongo_cps", d(["table", "users"]))).toBeUndefined();
  });

  it("Example 2: a key-only node gives each value its own counter", () => {
    const a = limitOf("messaging", d(["message_type", "marketing"], ["to_number", "2061111111"]));
    const b = limitOf("messaging", d(["message_type", "marketing"], ["to_number", "2062222222"]));
    expect(a).toMatchObject({ limit: 5, unit: "day" });
    expect(b).toMatchObject({ limit: 5, id: a?.id });
    expect(a?.counterKey).toBe("messaging/message_type=marketing/to_number=2061111111");
    expect(b?.counterKey).not.toBe(a?.counterKey);
    expect(limitOf("messaging", d(["to_number", "2061111111"]))).toMatchObject({ limit: 100 });
    // The placeholder level has no limit of its own.
    expect(limitOf("messaging", d(["message_type", "marketing"]))).toBeUndefined();
    expect(limitOf("messaging", d(["message_type", "transactional"], ["to_number", "1"]))).toBeUndefined();
  });

  it("Example 3: key+value is tried before key alone; requests_per_unit 0 loads (blocks all)", () => {
    expect(limitOf("edge_proxy_per_ip", d(["remote_address", "50.0.0.1"]))).toMatchObject({ limit: 10 });
    expect(limitOf("edge_proxy_per_ip", d(["remote_address", "50.0.0.5"]))).toMatchObject({ limit: 0 });
  });

  it("Example 4: a limit only applies to a descriptor as deep as its node", () => {
    expect(limitOf("example4", d(["key", "value"], ["subkey", "subvalue"]))).toMatchObject({ limit: 300 });
    const flat = loadConfig("test/config/fixtures/good/example4-flat.yaml");
    expect(flat.resolve("example4", d(["key", "value"]))?.rule.limit).toBe(300);
    // The README's point: the 1-level rule does not apply to the 2-entry descriptor.
    expect(flat.resolve("example4", d(["key", "value"], ["subkey", "subvalue"]))).toBeUndefined();
  });

  it("Example 5: unlimited rules resolve, marked unlimited", () => {
    const ldap = config.resolve("internal", d(["ldap", "anyone"]));
    expect(ldap?.rule.unlimited).toBe(true);
    expect(config.resolve("internal", d(["azure", "x"]))?.rule).toMatchObject({ limit: 100, unit: "minute" });
  });

  it("Example 6: shadow_mode is per descriptor", () => {
    const a = config.resolve("example6", d(["service", "auth-service"], ["user", "user-a"]));
    const b = config.resolve("example6", d(["service", "auth-service"], ["user", "user-b"]));
    expect(a?.rule).toMatchObject({ limit: 10, shadowMode: true });
    expect(b?.rule).toMatchObject({ limit: 20, shadowMode: false });
    expect(config.resolve("example6", d(["service", "auth-service"], ["user", "user-c"]))).toBeUndefined();
  });

  it("Example 7: replaces drops the named rule when both match one request", () => {
    const one = config.resolve("example7", d(["key_1", "value_1"], ["user", "bkthomps"]));
    const two = config.resolve("example7", d(["key_2", "value_2"], ["user", "bkthomps"]));
    expect(one?.rule).toMatchObject({ name: "specific_limit", limit: 5 });
    expect(two?.rule).toMatchObject({ limit: 10, replaces: ["specific_limit"] });
    // Alone, each applies.
    expect(applyReplaces([one])).toEqual([one]);
    expect(applyReplaces([two])).toEqual([two]);
    // Together, only the replacing 10/s limit is checked; positions still line up.
    expect(applyReplaces([one, two, undefined])).toEqual([undefined, two, undefined]);
  });

  it("Example 8: detailed_metric is accepted and does not change matching", () => {
    expect(limitOf("example8", d(["key1", "unspecified_value"]))).toMatchObject({ limit: 10 });
    expect(limitOf("example8", d(["key1", "value1"]))).toMatchObject({ limit: 20 });
  });

  it("Example 9: a trailing * matches by prefix, each value counted separately", () => {
    const a = limitOf("example9", d(["key1", "value_1"]));
    const b = limitOf("example9", d(["key1", "value_2"]));
    expect(a).toMatchObject({ limit: 20, unit: "minute", counterKey: "example9/key1=value_1" });
    expect(b).toMatchObject({ limit: 20, counterKey: "example9/key1=value_2" });
    expect(limitOf("example9", d(["key1", "other"]))).toBeUndefined();
  });

  it("an unknown domain or an empty descriptor has no limit", () => {
    expect(config.resolve("nope", d(["database", "users"]))).toBeUndefined();
    expect(config.resolve("mongo_cps", [])).toBeUndefined();
  });

  it("a descriptor deeper than the tree matches nothing", () => {
    expect(limitOf("mongo_cps", d(["database", "users"], ["extra", "x"]))).toBeUndefined();
  });
});
