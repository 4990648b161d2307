import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import { ManualClock } from "../../src/core/clock.js";
import { loadAuthFile, matcher, parseAuthFile, tokenNamesUnused } from "../../src/security/auth-file.js";
import { AuthFileWatcher } from "../../src/security/auth-watch.js";
import { sha256 } from "../../src/security/identity.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

const HEX = "a".repeat(64);

/** The problems of a bad file, as "path (line): message". */
function problems(text: string): string[] {
  try {
    parseAuthFile("auth.yaml", text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems.map((p) => `${p.path} (${p.line}): ${p.message}`);
  }
  throw new Error("the file was accepted");
}

describe("the auth file", () => {
  it("examples/auth.yaml is valid, and its tokens are the digests its comment names", () => {
    const p = loadAuthFile(path.join(REPO_ROOT, "examples/auth.yaml"));
    expect(p.tokens.get("gw-checkout")).toEqual(sha256("checkout-secret"));
    expect(p.tokens.get("ops")).toEqual(sha256("ops-secret"));
    expect(tokenNamesUnused(p.spec)).toEqual([]);
    expect(p.rolesOf("gw-search").may("check", "api")).toBe(true);
    expect(p.rolesOf("gw-search").may("report", "api")).toBe(false);
    expect(p.rolesOf("anonymous").may("limits", "api")).toBe(true);
    expect(p.rolesOf("anonymous").may("check", "api")).toBe(false);
    expect(p.rolesOf("spiffe://prod/ns/inference/sa/gpu-node-3").mayReportPool("gpu")).toBe(true);
    expect(p.rolesOf("spiffe://prod/ns/inference/sa/gpu-node-3").mayReportPool("cpu")).toBe(false);
    expect(p.rolesOf("gw-checkout").backend).toBe(false);
    expect(p.rolesOf("ops").mayReportPool("cpu")).toBe(true);
  });

  it("backends: each identity names its pools; a bad entry is named by path and line", () => {
    const p = parseAuthFile("auth.yaml", "backends:\n  - {identity: 'node-*', pools: [gpu, 'tpu-*']}\n");
    expect(p.rolesOf("node-1").mayReportPool("gpu")).toBe(true);
    expect(p.rolesOf("node-1").mayReportPool("tpu-v5")).toBe(true);
    expect(p.rolesOf("node-1").mayReportPool("cpu")).toBe(false);
    expect(p.rolesOf("other").backend).toBe(false);
    expect(
      problems(
        ["backends:", "  - identity: node-1", "    pools: []", "  - pools: [gpu]", "    domains: [api]"].join(
          "\n",
        ),
      ),
    ).toEqual([
      'backends[0].pools (3): names no pool (use ["*"] for every pool)',
      "backends[1].identity (4): is missing",
      'backends[1] (4): Unrecognized key: "domains"',
    ]);
    expect(
      tokenNamesUnused(
        parseAuthFile("a.yaml", `tokens: {node: ${HEX}}\nbackends: [{identity: node, pools: [gpu]}]\n`).spec,
      ),
    ).toEqual([]);
  });

  it("the README's Security section shows a valid file", () => {
    const readme = readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Security"));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)![1]!;
    const p = parseAuthFile("README.md", yaml);
    expect(p.rolesOf("gw-checkout").may("check", "messaging")).toBe(true);
    expect(p.rolesOf("server-a").memberIds).toEqual(["server-a"]);
  });

  it("names every bad field by its path and line", () => {
    const found = problems(
      [
        "tokens:",
        "  gw-a: not-a-digest", // 2
        "members:",
        "  - identity: ''", // 4
        "    member_id: 'has space'", // 5
        "gateways:",
        "  - identity: gw-a",
        "    domains: []", // 8
        "    may: [check, write]", // 9
        "  - domains: [api]", // 10: no identity
        "operators:",
        "  - identity: ops",
        "    role: admin", // 13: unknown field
        "extra: 1", // 14
      ].join("\n"),
    );
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^tokens\.gw-a \(2\): must be the token's SHA-256/),
        expect.stringMatching(/^members\[0\]\.identity \(4\): must not be empty/),
        expect.stringMatching(/^members\[0\]\.member_id \(5\): must be 1-128 letters/),
        expect.stringMatching(/^gateways\[0\]\.domains \(8\): names no domain/),
        expect.stringMatching(/^gateways\[0\]\.may\[1\] \(9\): must be one of report, check, settle, limits/),
        "gateways[1].identity (10): is missing",
        expect.stringMatching(/^operators\[0\] \(12\): .*role/),
        ' (1): Unrecognized key: "extra"',
      ]),
    );
    expect(found).toHaveLength(8);
  });

  it("refuses broken YAML with its line", () => {
    expect(problems("members:\n  - identity: [a\n")).toEqual([expect.stringMatching(/\(\d\): invalid YAML/)]);
  });

  it("matches identities and domains exactly or by glob", () => {
    expect(matcher("spiffe://prod/ns/gw/*")("spiffe://prod/ns/gw/sa/x")).toBe(true);
    expect(matcher("spiffe://prod/ns/gw/*")("spiffe://prod/ns/ops/sa/x")).toBe(false);
    expect(matcher("gw.a")("gwxa")).toBe(false); // a dot is a dot
    expect(matcher("team-*-eu")("team-search-eu")).toBe(true);
    expect(matcher("exact")("exact2")).toBe(false);
  });

  it("gives each identity its roles: members (with their ids), gateways per domain and action, operators", () => {
    const p = parseAuthFile(
      "auth.yaml",
      [
        `tokens: {srv: ${HEX}}`,
        "members:",
        "  - {identity: srv, member_id: s1}",
        "  - {identity: 'spiffe://c/*'}",
        "gateways:",
        "  - {identity: gw, domains: ['shop-*'], may: [report]}",
        "  - {identity: gw, domains: [api]}",
        "operators: [{identity: root}]",
      ].join("\n"),
    );
    const srv = p.rolesOf("srv");
    expect([srv.member, srv.memberIds, srv.operator, srv.mayAny("check")]).toEqual([
      true,
      ["s1"],
      false,
      false,
    ]);
    expect(p.rolesOf("spiffe://c/x").memberIds).toBeUndefined();
    const gw = p.rolesOf("gw");
    expect(gw.member).toBe(false);
    expect([gw.may("report", "shop-eu"), gw.may("check", "shop-eu"), gw.may("check", "api")]).toEqual([
      true,
      false,
      true,
    ]);
    expect(gw.may("report", "other")).toBe(false);
    expect(p.rolesOf("root").may("settle", "anything")).toBe(true);
    expect(p.rolesOf("nobody").mayAny("limits")).toBe(false);
  });
});

describe("the auth file watcher", () => {
  it("swaps in a good new file on reload, keeps the old one on a bad one and says why", () => {
    const file = path.join(tempDir("shardlimit-auth-"), "auth.yaml");
    writeFileSync(file, "operators: [{identity: a}]\n");
    const errors: string[] = [];
    let swaps = 0;
    const w = new AuthFileWatcher({
      path: file,
      clock: new ManualClock(),
      onSwap: () => swaps++,
      onError: (err) => errors.push(err.message),
    });
    try {
      expect(w.start().rolesOf("a").operator).toBe(true);
      writeFileSync(file, "operators: [{identity: b}]\n");
      expect(w.reload()).toBe(true);
      expect(w.current.rolesOf("b").operator).toBe(true);
      expect(w.current.rolesOf("a").operator).toBe(false);
      writeFileSync(file, "operators: [{identity: c, extra: 1}]\n");
      expect(w.reload()).toBe(false);
      expect(w.current.rolesOf("b").operator).toBe(true);
      expect(errors).toEqual([expect.stringMatching(/auth\.yaml:1: operators\[0\]: .*extra/)]);
      expect(swaps).toBe(2);
    } finally {
      w.stop();
    }
  });

  it("will not start on a bad file", () => {
    const file = path.join(tempDir("shardlimit-auth-"), "auth.yaml");
    writeFileSync(file, "gateways: [{identity: g}]\n");
    const w = new AuthFileWatcher({ path: file, clock: new ManualClock(), onError: () => {} });
    expect(() => w.start()).toThrow(/gateways\[0\]\.domains/);
    expect(readFileSync(file, "utf8")).toContain("gateways");
  });
});
