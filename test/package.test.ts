import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ensureBuilt, REPO_ROOT } from "../src/testkit/cli.js";

/**
 * `npm install shardlimit` for the gateway client: the packed package, installed with
 * --omit=dev into an empty project, loads createLimiter without the load-test packages, and
 * `shardlimit bench` there says what to install (scripts/check-package.sh; ~10 s, needs npm's
 * registry for the runtime dependencies).
 */
describe("the packed package", () => {
  it("installs without the load-test packages; bench names them", { timeout: 120_000 }, () => {
    ensureBuilt();
    const r = spawnSync("bash", ["scripts/check-package.sh", "--built"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      timeout: 110_000,
    });
    expect(r.stdout + r.stderr).toContain("check:package: ok");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("typeof createLimiter: function");
    expect(r.stdout).toContain("npm install ioredis rate-limiter-flexible cli-progress hdr-histogram-js");
  });
});
