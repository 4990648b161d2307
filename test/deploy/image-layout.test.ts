import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../../src/protocol/rpc.js";
import { type Child, spawnChild } from "../../src/testkit/child.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";
import { freePort } from "../../src/testkit/ports.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { type Image, inRoot, type Layout, layOut, parseDockerfile, readDockerignore } from "./dockerfile.js";

/**
 * The container image without a Docker engine: the Dockerfile is read (dockerfile-ast), its
 * build stage compiled and its runtime stage laid out in temp directories as `docker build`
 * would (COPY through .dockerignore, `npm ci --omit=dev` for real), then its ENTRYPOINT + CMD
 * run from there as the Dockerfile's USER (setpriv, when the test runs as root), with the
 * image's ENV and the ports overridden as `docker run -e` would. It must serve gRPC, pass its
 * own HEALTHCHECK, and exit 0 on SIGTERM.
 */

const image: Image = parseDockerfile(readFileSync(path.join(REPO_ROOT, "Dockerfile"), "utf8"));
let work: string;
let layout: Layout;
let runtimeRoot: string;

beforeAll(() => {
  work = tempDir("shardlimit-image-");
  layout = layOut(image, { context: REPO_ROOT, workDir: work, linkFullInstall: true });
  runtimeRoot = layout.roots.get(String(image.stages.length - 1))!;
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The HEALTHCHECK command, run as Docker runs it in the container (exit 0: healthy). */
function healthcheck(env: NodeJS.ProcessEnv): number | null {
  const [cmd, ...args] = image.healthcheck!.cmd;
  const r = spawnSync(cmd === "node" ? process.execPath : cmd!, args, { env, timeout: 10_000 });
  return r.status;
}

describe("the Dockerfile", () => {
  it("builds in one stage and runs from a second with production dependencies only, as a non-root user", () => {
    expect(image.stages.map((s) => s.base)).toEqual(["node:20-slim", "node:20-slim"]);
    expect(image.stages[0]!.name).toBe("build");
    expect(layout.ran).toEqual(["npm run build", "npm ci --omit=dev --ignore-scripts --no-audit --no-fund"]);
    const nm = path.join(runtimeRoot, "app/node_modules");
    for (const dep of ["@grpc/grpc-js", "etcd3", "pino", "commander"])
      expect(existsSync(path.join(nm, dep)), dep).toBe(true);
    for (const dev of ["typescript", "vitest", "ioredis", "@biomejs/biome"])
      expect(existsSync(path.join(nm, dev)), dev).toBe(false);
    expect(existsSync(path.join(runtimeRoot, "app/src")), "no TypeScript sources in the image").toBe(false);
    expect(image.user).toBeDefined();
    expect(image.user!.uid).toBeGreaterThan(0);
    // Both ports the server listens on by default are exposed, and the health check asks the HTTP one.
    expect(image.exposed.sort()).toEqual(
      [Number(image.env.SHARDLIMIT_HTTP_PORT), Number(image.env.SHARDLIMIT_GRPC_PORT)].sort(),
    );
    expect(image.healthcheck!.cmd.join(" ")).toContain("/readyz");
    expect(image.entrypoint).toEqual(["node", "/app/dist/cli/main.js"]);
    expect(image.cmd[0]).toBe("serve");
  });

  it("sends a build context without dependencies, builds or git history (.dockerignore)", () => {
    const ignore = readDockerignore(REPO_ROOT);
    for (const p of [
      "node_modules/x/index.js",
      "dist/cli/main.js",
      ".git/HEAD",
      "bench/out/a.json",
      "server.log",
    ]) {
      expect(ignore.ignores(p), p).toBe(true);
    }
    for (const p of [
      "src/cli/main.ts",
      "package.json",
      "package-lock.json",
      "proto/shardlimit/v1/ratelimiter.proto",
    ]) {
      expect(ignore.ignores(p), p).toBe(false);
    }
  });

  it("serves gRPC Check, passes its HEALTHCHECK, and exits 0 on SIGTERM", { timeout: 60_000 }, async () => {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    // `docker run -e`: the image's ENV, the ports moved to free ones, loopback only.
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      ...image.env,
      SHARDLIMIT_GRPC_PORT: String(grpcPort),
      SHARDLIMIT_HTTP_PORT: String(httpPort),
      SHARDLIMIT_GRPC_HOST: "127.0.0.1",
      SHARDLIMIT_HTTP_HOST: "127.0.0.1",
    };
    const [prog, ...rest] = [...image.entrypoint, ...image.cmd].map((w) => inRoot(runtimeRoot, w));
    expect(rest[0]).toBe(path.join(runtimeRoot, "app/dist/cli/main.js"));
    const argv = [prog === "node" ? process.execPath : prog!, ...rest];
    // As the image's USER when we can switch to it (root); setpriv execs, so the pid is node's.
    const asUser = process.getuid?.() === 0;
    if (asUser && spawnSync("setpriv", ["--version"]).status !== 0) {
      throw new Error("running as root: setpriv (Debian's util-linux) is needed to run as the image's USER");
    }
    const { uid, gid } = image.user!;
    const c: Child = asUser
      ? spawnChild("setpriv", [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", ...argv], {
          env,
          cwd: path.join(runtimeRoot, image.workdir),
        })
      : spawnChild(argv[0]!, argv.slice(1), { env, cwd: path.join(runtimeRoot, image.workdir) });
    try {
      await c.waitForLog("shardlimit serving", (l) => l.msg === "shardlimit serving", { timeoutMs: 30_000 });
      if (asUser) {
        const status = readFileSync(`/proc/${c.pid}/status`, "utf8");
        expect(status).toMatch(new RegExp(`^Uid:\\s+${uid}\\s`, "m"));
      }
      const rpc = connect(`127.0.0.1:${grpcPort}`);
      try {
        const r = await rpc.check(
          { items: [{ key: "api/remote_address=192.0.2.1", cost: 1 }] },
          { deadlineMs: 5000 },
        );
        expect(r.results[0]).toMatchObject({ allowed: true, limit: 600 });
      } finally {
        rpc.close();
      }
      expect(healthcheck(env), "HEALTHCHECK against a serving server").toBe(0);
      c.child.kill("SIGTERM");
      expect(await c.exited).toEqual({ code: 0, signal: null });
      expect(healthcheck(env), "unhealthy once stopped").toBe(1);
    } finally {
      await c.stop("SIGKILL");
    }
  });
});
