import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/errors.js";
import { type ConfigDiff, ConfigWatcher, type LimitConfig } from "../../src/config/index.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { waitFor } from "../../src/testkit/wait.js";

function limits(domain: string, rps: number): string {
  return `domain: ${domain}\ndescriptors:\n  - key: tenant\n    rate_limit:\n      unit: second\n      requests_per_unit: ${rps}\n`;
}

function rpsOf(config: LimitConfig | undefined, domain = "api"): number | undefined {
  return config?.resolve(domain, [{ key: "tenant", value: "t" }])?.rule.limit;
}

function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  return waitFor(what, condition, timeoutMs, 10);
}

describe("ConfigWatcher", () => {
  let dir: string;
  let watcher: ConfigWatcher | undefined;
  let swaps: LimitConfig[];
  let errors: Error[];
  const last = () => swaps[swaps.length - 1];

  function start(path: string): boolean {
    watcher = new ConfigWatcher({
      path,
      debounceMs: 20,
      onSwap: (c) => swaps.push(c),
      onError: (e) => errors.push(e),
    });
    return watcher.start();
  }

  beforeEach(() => {
    dir = tempDir("shardlimit-watch-");
    swaps = [];
    errors = [];
  });
  afterEach(() => {
    watcher?.stop();
    watcher = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("loads on start, then swaps when the file changes", async () => {
    const file = join(dir, "limits.yaml");
    writeFileSync(file, limits("api", 10));
    expect(start(file)).toBe(true);
    expect(swaps).toHaveLength(1);
    expect(rpsOf(last())).toBe(10);

    writeFileSync(file, limits("api", 20));
    await until(() => rpsOf(last()) === 20, "the edited limit");
    expect(errors).toEqual([]);
  });

  it("keeps the last good config when the new one is invalid, and recovers", async () => {
    const file = join(dir, "limits.yaml");
    writeFileSync(file, limits("api", 10));
    start(file);

    writeFileSync(file, limits("api", 10).replace("second", "secnd"));
    await until(() => errors.length > 0, "the error");
    expect(errors[0]).toBeInstanceOf(ConfigError);
    expect(errors[0]?.message).toContain('"secnd" is not a unit');
    expect(swaps).toHaveLength(1);
    expect(rpsOf(last())).toBe(10);

    writeFileSync(file, limits("api", 30));
    await until(() => rpsOf(last()) === 30, "the fixed limit");
  });

  it("follows editors that save by renaming a new file over the old one", async () => {
    const file = join(dir, "limits.yaml");
    writeFileSync(file, limits("api", 10));
    start(file);
    writeFileSync(join(dir, ".limits.yaml.tmp"), limits("api", 40));
    renameSync(join(dir, ".limits.yaml.tmp"), file);
    await until(() => rpsOf(last()) === 40, "the renamed file");
    writeFileSync(join(dir, ".limits.yaml.tmp"), limits("api", 50));
    renameSync(join(dir, ".limits.yaml.tmp"), file);
    await until(() => rpsOf(last()) === 50, "the second rename");
  });

  it("watches a directory: added files, and a Kubernetes ConfigMap style ..data symlink swap", async () => {
    // The layout kubelet writes: files are symlinks through ..data, which is swapped atomically.
    const v1 = join(dir, "..2024_01");
    mkdirSync(v1);
    writeFileSync(join(v1, "api.yaml"), limits("api", 10));
    symlinkSync("..2024_01", join(dir, "..data"));
    symlinkSync(join("..data", "api.yaml"), join(dir, "api.yaml"));
    expect(start(dir)).toBe(true);
    expect(rpsOf(last())).toBe(10);

    const v2 = join(dir, "..2024_02");
    mkdirSync(v2);
    writeFileSync(join(v2, "api.yaml"), limits("api", 60));
    symlinkSync("..2024_02", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    await until(() => rpsOf(last()) === 60, "the swapped ConfigMap");

    writeFileSync(join(dir, "other.yaml"), limits("other", 5));
    await until(() => rpsOf(last(), "other") === 5, "the added file");
    expect(errors).toEqual([]);
  });

  it("follows a directory path that is a symlink swapped to a new target", async () => {
    mkdirSync(join(dir, "v1"));
    mkdirSync(join(dir, "v2"));
    writeFileSync(join(dir, "v1", "api.yaml"), limits("api", 10));
    writeFileSync(join(dir, "v2", "api.yaml"), limits("api", 70));
    symlinkSync("v1", join(dir, "current"));
    start(join(dir, "current"));
    symlinkSync("v2", join(dir, "next"));
    renameSync(join(dir, "next"), join(dir, "current"));
    await until(() => rpsOf(last()) === 70, "the new target");
    // And the new target is the one being watched now.
    writeFileSync(join(dir, "v2", "api.yaml"), limits("api", 80));
    await until(() => rpsOf(last()) === 80, "an edit in the new target");
  });

  it("reload() loads now; it swaps even when nothing changed, and reports failures", () => {
    const file = join(dir, "limits.yaml");
    writeFileSync(file, limits("api", 10));
    start(file);
    watcher?.stop();

    expect(watcher?.reload()).toBe(true);
    expect(swaps).toHaveLength(2);
    expect(last()).not.toBe(swaps[0]);

    writeFileSync(file, "domain: [");
    expect(watcher?.reload()).toBe(false);
    expect(errors[0]).toBeInstanceOf(ConfigError);
    expect(errors[0]?.message).toContain("invalid YAML");
    expect(swaps).toHaveLength(2);

    rmSync(file);
    expect(watcher?.reload()).toBe(false);
    expect(errors[1]?.message).toContain("does not exist");
  });

  describe("a reload that removes limits", () => {
    let diffs: (ConfigDiff | undefined)[];
    function startDir(allowRemoval?: boolean): boolean {
      diffs = [];
      watcher = new ConfigWatcher({
        path: dir,
        debounceMs: 20,
        allowRemoval,
        onSwap: (c, d) => {
          swaps.push(c);
          diffs.push(d);
        },
        onError: (e) => errors.push(e),
      });
      return watcher.start();
    }
    const twoDomains = () => {
      writeFileSync(join(dir, "api.yaml"), limits("api", 10));
      writeFileSync(join(dir, "web.yaml"), limits("web", 5));
    };

    it("is refused, naming what it would remove; the old config keeps serving", () => {
      twoDomains();
      expect(startDir()).toBe(true);
      rmSync(join(dir, "web.yaml"));
      expect(watcher?.reload()).toBe(false);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(ConfigError);
      expect(errors[0]?.message).toContain('removes domain "web"');
      expect(errors[0]?.message).toContain("web/tenant");
      expect(swaps).toHaveLength(1);
      expect(rpsOf(last(), "web")).toBe(5);

      // A rule removed inside a domain that stays is refused too.
      twoDomains();
      writeFileSync(
        join(dir, "api.yaml"),
        "domain: api\ndescriptors:\n  - key: other\n    rate_limit: { unit: second, requests_per_unit: 1 }\n",
      );
      expect(watcher?.reload()).toBe(false);
      expect(errors[1]?.message).toContain('removes rule "api/tenant"');
      expect(errors[1]?.message).not.toContain('domain "api"');
    });

    it("is applied with allowRemoval, and every swap carries the diff", () => {
      twoDomains();
      expect(startDir(true)).toBe(true);
      expect(diffs).toEqual([undefined]);
      rmSync(join(dir, "web.yaml"));
      writeFileSync(join(dir, "api.yaml"), limits("api", 20));
      writeFileSync(join(dir, "mail.yaml"), limits("mail", 1));
      expect(watcher?.reload()).toBe(true);
      expect(errors).toEqual([]);
      expect(rpsOf(last())).toBe(20);
      expect(diffs[1]).toEqual({
        domainsAdded: ["mail"],
        domainsRemoved: ["web"],
        rulesAdded: ["mail/tenant"],
        rulesRemoved: ["web/tenant"],
        rulesChanged: ["api/tenant"],
      });
    });
  });

  it("skips event-driven reloads whose content is unchanged", async () => {
    const file = join(dir, "limits.yaml");
    writeFileSync(file, limits("api", 10));
    start(file);
    writeFileSync(join(dir, "unrelated.txt"), "x");
    writeFileSync(file, limits("api", 10));
    // A real change afterwards proves the watcher ran in between.
    await new Promise((r) => setTimeout(r, 100));
    writeFileSync(file, limits("api", 11));
    await until(() => rpsOf(last()) === 11, "the real change");
    expect(swaps.map((c) => rpsOf(c))).toEqual([10, 11]);
  });

  it("stop() stops watching", async () => {
    const file = join(dir, "limits.yaml");
    writeFileSync(file, limits("api", 10));
    start(file);
    watcher?.stop();
    writeFileSync(file, limits("api", 99));
    await new Promise((r) => setTimeout(r, 150));
    expect(swaps).toHaveLength(1);
  });

  it("validates its options", () => {
    expect(
      () => new ConfigWatcher({ path: dir, debounceMs: -1, onSwap: () => {}, onError: () => {} }),
    ).toThrow(/debounceMs/);
  });
});
