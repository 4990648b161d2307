import { describe, expect, it } from "vitest";
import { resolveKey } from "../../src/config/config.js";
import { ConfigError } from "../../src/config/errors.js";
import { compileSources } from "../../src/config/load.js";
import {
  type LimitOverride,
  liveOverrides,
  OVERRIDES_SOURCE,
  overridesSource,
  parseOverrides,
} from "../../src/config/overrides.js";
import type { Resolved } from "../../src/config/types.js";

const YAML = `domain: api
descriptors:
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: 100 }
    descriptors:
      - key: path
        value: "/a*"
        share_threshold: true
        rate_limit: { unit: minute, requests_per_unit: 10, algorithm: sliding_window }
`;
const base = [{ file: "api.yaml", text: YAML }];
const t = (value: string) => ({ key: "tenant", value });
const compile = (overrides: LimitOverride[]) => compileSources([...base, overridesSource(overrides)]);

describe("runtime overrides", () => {
  it("replace the limit of exactly the descriptor they name, keeping its counter and algorithm", () => {
    const c = compile([{ key: "api/tenant=t1/path=%2Fadmin", requestsPerUnit: 2, unit: "hour" }]);
    const hit = c.resolve("api", [t("t1"), { key: "path", value: "/admin" }])!;
    expect(hit.rule).toMatchObject({
      id: "api/tenant/path=%2Fa*",
      limit: 2,
      windowMs: 3_600_000,
      unit: "hour",
    });
    expect(hit.rule.algorithm).toBe("sliding_window");
    // The shared wildcard's counter, as without the override.
    expect(hit.counterKey).toBe("api/tenant=t1/path=%2Fa*");
    // Another value under the same wildcard, another tenant, a shorter path: untouched.
    expect(c.resolve("api", [t("t1"), { key: "path", value: "/abc" }])!.rule.limit).toBe(10);
    expect(c.resolve("api", [t("t2"), { key: "path", value: "/admin" }])!.rule.limit).toBe(10);
    expect(c.resolve("api", [t("t1")])!.rule.limit).toBe(100);
  });

  it("apply to a canonical key whatever its priority class", () => {
    const c = compile([{ key: "api/tenant=t1", requestsPerUnit: 7, unit: "second" }]);
    const r = resolveKey(c, "api/tenant=t1/priority=critical") as Resolved;
    expect(r.rule.limit).toBe(7);
    expect(r.rank).toBeDefined();
  });

  it("add a limit of their own for a path the config does not match; none for an unknown domain", () => {
    const c = compile([
      { key: "api/user=u1", requestsPerUnit: 5, unit: "minute" },
      { key: "web/ip=1", requestsPerUnit: 5, unit: "minute" },
    ]);
    const r = c.resolve("api", [{ key: "user", value: "u1" }])!;
    expect(r).toMatchObject({ counterKey: "api/user=u1", shardKey: "api/user=u1" });
    expect(r.rule).toMatchObject({ limit: 5, windowMs: 60_000, algorithm: "fixed_window", unlimited: false });
    expect(r.rule.source.file).toBe(OVERRIDES_SOURCE);
    expect(c.resolve("api", [{ key: "user", value: "u2" }])).toBeUndefined();
    expect(c.resolve("web", [{ key: "ip", value: "1" }])).toBeUndefined();
    expect(c.domains).toEqual(["api"]);
  });

  it("change the config's version, and compile again from the sources a gateway is given", () => {
    const none = compile([]);
    const one = compile([{ key: "api/tenant=t1", requestsPerUnit: 7, unit: "second" }]);
    expect(one.version).not.toBe(none.version);
    expect(one.version).not.toBe(compileSources(base).version);
    // Order of overrides does not matter; a gateway compiling what GetLimits sends gets the same.
    const two: LimitOverride[] = [
      { key: "api/tenant=b", requestsPerUnit: 1, unit: "second" },
      { key: "api/tenant=a", requestsPerUnit: 2, unit: "second" },
    ];
    const c = compile(two);
    expect(compile([...two].reverse()).version).toBe(c.version);
    const again = compileSources(c.sources.map((s) => ({ file: s.file, text: s.text })));
    expect(again.version).toBe(c.version);
    expect(again.resolve("api", [t("a")])!.rule.limit).toBe(2);
  });

  it("refuse a malformed overrides source as a config problem naming it", () => {
    for (const text of [
      "{",
      '[{"key":"api/tenant=a","requestsPerUnit":-1,"unit":"second"}]',
      '[{"key":"api","requestsPerUnit":1,"unit":"second"}]',
    ]) {
      expect(() => compileSources([...base, { file: OVERRIDES_SOURCE, text }])).toThrow(ConfigError);
      expect(typeof parseOverrides(text)).toBe("string");
    }
    expect(parseOverrides('[{"key":"api","requestsPerUnit":1,"unit":"second"}]')).toContain(
      "no descriptor entries",
    );
  });

  it("are live until their expiry", () => {
    const os: LimitOverride[] = [
      { key: "api/tenant=a", requestsPerUnit: 1, unit: "second", expiresAt: 1000 },
      { key: "api/tenant=b", requestsPerUnit: 1, unit: "second" },
    ];
    expect(liveOverrides(os, 999).map((o) => o.key)).toEqual(["api/tenant=a", "api/tenant=b"]);
    expect(liveOverrides(os, 1000).map((o) => o.key)).toEqual(["api/tenant=b"]);
  });
});
