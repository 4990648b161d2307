import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { spawnChild } from "../../src/testkit/child.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";
import { removeTempDirs, tempDir } from "../../src/testkit/temp-dir.js";
import { waitFor } from "../../src/testkit/wait.js";

const HELPER = pathToFileURL(path.join(REPO_ROOT, "src/testkit/temp-dir.ts")).href;

/**
 * A node process (tsx, from the repository root) that makes a temp dir through the helper, puts a
 * file in it, prints its path, then runs `then` (JavaScript; `setInterval(() => {}, 1000)` to wait
 * for a signal).
 */
function child(then: string) {
  const script = `const { tempDir } = await import(${JSON.stringify(HELPER)});
const dir = tempDir("shardlimit-temp-dir-test-");
(await import("node:fs")).writeFileSync(dir + "/file", "x");
console.log(dir);
${then}`;
  return spawnChild(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: REPO_ROOT,
  });
}

async function dirOf(c: ReturnType<typeof child>): Promise<string> {
  await waitFor("the child's temp dir", () => c.lines.length > 0 || c.child.exitCode !== null, 20_000);
  const dir = c.lines[0];
  expect(dir, c.output()).toMatch(/shardlimit-temp-dir-test-/);
  return dir!;
}

describe("tempDir", () => {
  it("leaves nothing behind when the process exits by itself", async () => {
    const c = child("");
    const dir = await dirOf(c);
    expect(await c.exited).toEqual({ code: 0, signal: null });
    expect(existsSync(dir)).toBe(false);
  });

  it("leaves nothing behind when the process calls process.exit", async () => {
    const c = child("setInterval(() => {}, 1000); process.exit(3);");
    const dir = await dirOf(c);
    expect((await c.exited).code).toBe(3);
    expect(existsSync(dir)).toBe(false);
  });

  // vitest stops its fork workers with SIGTERM: without a handler, "exit" never runs.
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const)
    it(`leaves nothing behind when ${signal} ends the process, which still dies by ${signal}`, async () => {
      const c = child("setInterval(() => {}, 1000);");
      const dir = await dirOf(c);
      expect(existsSync(dir)).toBe(true);
      c.child.kill(signal);
      expect(await c.exited).toEqual({ code: null, signal });
      expect(existsSync(dir)).toBe(false);
    });

  it("leaves a SIGTERM to the process's own handler, and removes the dir when that one exits", async () => {
    const c = child(
      `setInterval(() => {}, 1000);
process.on("SIGTERM", () => { console.log("handled"); setImmediate(() => process.exit(5)); });
console.log("ready");`,
    );
    const dir = await dirOf(c);
    await waitFor("its SIGTERM handler", () => c.lines.includes("ready"), 20_000);
    c.child.kill("SIGTERM");
    expect((await c.exited).code).toBe(5);
    expect(c.lines).toContain("handled");
    expect(existsSync(dir)).toBe(false);
  });

  it("leaves nothing behind in a vitest worker, which vitest stops with SIGTERM", async () => {
    const out = path.join(tempDir("shardlimit-temp-dir-test-"), "dir");
    const c = spawnChild(
      process.execPath,
      [
        path.join(REPO_ROOT, "node_modules/vitest/vitest.mjs"),
        "run",
        "--config",
        "test/fixtures/temp-dir/vitest.config.ts",
      ],
      { cwd: REPO_ROOT, env: { ...process.env, SHARDLIMIT_TEMP_DIR_OUT: out } },
    );
    expect((await c.exited).code, c.output()).toBe(0);
    const dir = readFileSync(out, "utf8");
    expect(dir).toContain("shardlimit-temp-dir-test-");
    expect(existsSync(dir)).toBe(false);
  });

  it("removeTempDirs removes them at once, with what they hold", () => {
    const a = tempDir("shardlimit-temp-dir-test-");
    const b = tempDir("shardlimit-temp-dir-test-");
    writeFileSync(path.join(a, "f"), "x");
    expect(path.basename(a)).toMatch(/^shardlimit-temp-dir-test-.+/);
    expect(a).not.toBe(b);
    removeTempDirs();
    expect(existsSync(a) || existsSync(b)).toBe(false);
    removeTempDirs();
  });
});
