import { copyFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_HEAP_GROWING_PERCENT } from "../../src/app/heap.js";
import { connect } from "../../src/protocol/rpc.js";
import type { Child as CliProcess } from "../../src/testkit/child.js";
import { ensureBuilt, killAllCli, REPO_ROOT, runCli } from "../../src/testkit/cli.js";
import { httpGet } from "../../src/testkit/http.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { startCli } from "./harness.js";

/**
 * The built command line as a real process: `serve` on ports chosen by the OS, SIGHUP reloads,
 * SIGTERM drains and exits 0, `check-config`, help, and flags from the environment.
 */

const EXAMPLE = path.join(REPO_ROOT, "examples/config.yaml");
const LOOPBACK = ["--grpc-host", "127.0.0.1", "--http-host", "127.0.0.1"];

/** A copy of the example config that a test may overwrite. */
function exampleCopy(): string {
  const file = path.join(tempDir("shardlimit-proc-"), "config.yaml");
  copyFileSync(EXAMPLE, file);
  return file;
}

/** Waits for "shardlimit serving" and returns the ports it logged. */
async function serving(p: CliProcess): Promise<{ grpcPort: number; httpPort: number }> {
  const { log } = await p.waitForLog('"shardlimit serving"', (l) => l.msg === "shardlimit serving");
  expect(log).toMatchObject({
    level: 30,
    svc: "shardlimit",
    mode: "standalone",
    domains: ["api", "messaging", "inference"],
    // The server set V8's growing factor on itself (src/app/heap.ts).
    heap: expect.objectContaining({ growingPercent: DEFAULT_HEAP_GROWING_PERCENT }),
  });
  const grpcPort = log.grpcPort as number;
  const httpPort = log.httpPort as number;
  expect(grpcPort).toBeGreaterThan(0);
  expect(httpPort).toBeGreaterThan(0);
  expect(grpcPort).not.toBe(httpPort);
  return { grpcPort, httpPort };
}

/** Remaining and limit on one remote address (600 a minute in the example config), over gRPC. */
async function checkOnce(grpcPort: number, key = "api/remote_address=192.0.2.1") {
  const rpc = connect(`127.0.0.1:${grpcPort}`);
  try {
    return (await rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 })).results[0]!;
  } finally {
    rpc.close();
  }
}

beforeAll(() => {
  ensureBuilt();
});

afterEach(async () => {
  await killAllCli();
});
afterAll(async () => {
  await killAllCli();
});

describe("shardlimit serve", () => {
  it("serves gRPC and HTTP on the ports it logs; SIGHUP with an invalid config keeps the old one; SIGTERM exits 0", async () => {
    const config = exampleCopy();
    const p = startCli(["serve", "--config", config, "--grpc-port", "0", "--http-port", "0", ...LOOPBACK]);
    const { grpcPort, httpPort } = await serving(p);

    expect(await checkOnce(grpcPort)).toMatchObject({ allowed: true, remaining: 599, limit: 600 });
    expect(await httpGet(`http://127.0.0.1:${httpPort}/readyz`)).toMatchObject({ status: 200 });
    const rpc = connect(`127.0.0.1:${grpcPort}`);
    try {
      const view = await rpc.getClusterView({});
      expect(view.members.map((m) => m.address)).toEqual([`127.0.0.1:${grpcPort}`]);
    } finally {
      rpc.close();
    }

    // An invalid config written in place, then SIGHUP: refused, logged, the old config serves.
    writeFileSync(
      config,
      "domain: api\ndescriptors:\n  - key: x\n    rate_limit: { unit: secnd, requests_per_unit: 1 }\n",
    );
    const mark = p.lines.length;
    p.child.kill("SIGHUP");
    const hup = await p.waitForLog("the SIGHUP log", (l) => l.msg === "SIGHUP: reloading config", {
      from: mark,
    });
    const refused = await p.waitForLog(
      "the refusal",
      (l) => l.msg === "config reload refused; the previous config keeps serving",
      { from: hup.index },
    );
    expect(refused.log.level).toBe(50);
    expect(String(refused.log.err)).toMatch(/secnd/);
    expect(p.child.exitCode).toBeNull();
    expect(await checkOnce(grpcPort)).toMatchObject({ allowed: true, remaining: 598, limit: 600 });
    expect(await httpGet(`http://127.0.0.1:${httpPort}/readyz`)).toMatchObject({ status: 200 });

    // SIGTERM: drains and exits 0; the HTTP port stops answering (or answers 503 while draining).
    const started = Date.now();
    p.child.kill("SIGTERM");
    const exit = await p.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(5000);
    await p.waitForLog('"shut down"', (l) => l.msg === "shut down");
    const after = await httpGet(`http://127.0.0.1:${httpPort}/readyz`).then(
      (r) => r.status,
      () => "closed",
    );
    expect([503, "closed"]).toContain(after);
  });

  it("takes its settings from SHARDLIMIT_* environment variables instead of flags", async () => {
    const p = startCli(["serve"], {
      SHARDLIMIT_CONFIG: exampleCopy(),
      SHARDLIMIT_GRPC_PORT: "0",
      SHARDLIMIT_HTTP_PORT: "0",
      SHARDLIMIT_GRPC_HOST: "127.0.0.1",
      SHARDLIMIT_HTTP_HOST: "127.0.0.1",
      SHARDLIMIT_MAX_BATCH: "2",
    });
    const { grpcPort, httpPort } = await serving(p);
    expect(await checkOnce(grpcPort)).toMatchObject({ allowed: true, limit: 600 });
    expect(await httpGet(`http://127.0.0.1:${httpPort}/healthz`)).toMatchObject({ status: 200 });
    // SHARDLIMIT_MAX_BATCH reached the server.
    const rpc = connect(`127.0.0.1:${grpcPort}`);
    try {
      const items = Array.from({ length: 3 }, () => ({ key: "api/remote_address=192.0.2.9", cost: 1 }));
      await expect(rpc.check({ items })).rejects.toMatchObject({
        details: expect.stringMatching(/maximum of 2/),
      });
    } finally {
      rpc.close();
    }
    p.child.kill("SIGTERM");
    expect(await p.exited).toEqual({ code: 0, signal: null });
  });

  it("SIGINT also drains and exits 0", async () => {
    const p = startCli(["serve", "-c", exampleCopy(), "--grpc-port", "0", "--http-port", "0", ...LOOPBACK]);
    await serving(p);
    p.child.kill("SIGINT");
    expect(await p.exited).toEqual({ code: 0, signal: null });
  });

  it("a port already taken exits 1 naming the address, without lingering half-started", async () => {
    // gRPC binds first and succeeds; the HTTP port is taken. The process must close the gRPC
    // listener it opened and exit, not keep running without serving.
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const p = startCli([
        "serve",
        "-c",
        exampleCopy(),
        "--grpc-port",
        "0",
        "--http-port",
        String(port),
        ...LOOPBACK,
      ]);
      const exit = await Promise.race([
        p.exited,
        new Promise<"still running">((r) => setTimeout(() => r("still running"), 10_000).unref()),
      ]);
      expect(exit).toEqual({ code: 1, signal: null });
      expect(p.stderr()).toContain(
        `shardlimit: cannot start: listen EADDRINUSE: address already in use 127.0.0.1:${port}`,
      );
    } finally {
      taken.close();
    }
  });

  it("a bad flag value exits non-zero naming the flag, from the command line or the environment", () => {
    const flag = runCli(["serve", "--config", EXAMPLE, "--grpc-port", "abc"]);
    expect(flag.status).not.toBe(0);
    expect(flag.stderr).toMatch(/--grpc-port must be a whole number from 0 to 65535, got "abc"/);

    const big = runCli(["serve", "--config", EXAMPLE, "--http-port", "70000"]);
    expect(big.status).not.toBe(0);
    expect(big.stderr).toMatch(/--http-port/);

    const env = runCli(["serve", "--config", EXAMPLE], { SHARDLIMIT_GRPC_PORT: "abc" });
    expect(env.status).not.toBe(0);
    expect(env.stderr).toMatch(/--grpc-port/);

    const level = runCli(["serve", "--config", EXAMPLE, "--log-level", "loud"]);
    expect(level.status).not.toBe(0);
    expect(level.stderr).toMatch(/--log-level/);

    const etcd = runCli(["serve", "--config", EXAMPLE, "--etcd", "127.0.0.1:2379"]);
    expect(etcd.status).not.toBe(0);
    expect(etcd.stderr).toMatch(/--etcd: "127.0.0.1:2379" is not an etcd URL like http:\/\/127.0.0.1:2379/);

    const prefix = runCli(["serve", "--config", EXAMPLE], { SHARDLIMIT_PREFIX: "shardlimit" });
    expect(prefix.status).not.toBe(0);
    expect(prefix.stderr).toMatch(/--prefix must look like \/shardlimit\//);

    const id = runCli(["serve", "--config", EXAMPLE, "--id", "has space"]);
    expect(id.status).not.toBe(0);
    expect(id.stderr).toMatch(/--id must be 1-128 letters/);

    const ttl = runCli(["serve", "--config", EXAMPLE, "--lease-ttl", "0"]);
    expect(ttl.status).not.toBe(0);
    expect(ttl.stderr).toMatch(/--lease-ttl must be a whole number from 1 to 60/);
  });

  it("without a config, or with a config that does not load, it exits 1 and says why", () => {
    const none = runCli(["serve"]);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/--config/);

    const empty = runCli(["serve"], { SHARDLIMIT_CONFIG: "" });
    expect(empty.status).not.toBe(0);
    expect(empty.stderr).toMatch(/SHARDLIMIT_CONFIG\) is empty/);

    const bad = runCli([
      "serve",
      "--config",
      path.join(REPO_ROOT, "test/config/fixtures/bad/bad-unit.yaml"),
      "--grpc-port",
      "0",
      "--http-port",
      "0",
      ...LOOPBACK,
    ]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/config is invalid/);
    expect(bad.stderr).toMatch(/bad-unit\.yaml:6/);
  });
});

describe("shardlimit check-config", () => {
  it("exits 0 on the example config and summarises it", () => {
    const r = runCli(["check-config", EXAMPLE]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^3 domains, 15 rules from 1 file/);
    expect(r.stderr).toBe("");
  });

  it("exits 1 on a bad config, naming the file and line", () => {
    const file = path.join(REPO_ROOT, "test/config/fixtures/bad/bad-unit.yaml");
    const r = runCli(["check-config", file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${file}:6: descriptors[0].rate_limit.unit: "secnd" is not a unit`);
  });
});

describe("shardlimit --help", () => {
  it("lists the commands", () => {
    const r = runCli(["--help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Usage: shardlimit/);
    expect(r.stdout).toMatch(/serve/);
    expect(r.stdout).toMatch(/check-config/);
    expect(r.stdout).toMatch(/assigner/);
    expect(r.stdout).toMatch(/status/);
  });

  it("serve --help lists every flag and its environment variable", () => {
    const r = runCli(["serve", "--help"]);
    expect(r.status).toBe(0);
    for (const flag of [
      "--config",
      "--grpc-host",
      "--grpc-port",
      "--http-host",
      "--http-port",
      "--log-level",
      "--max-counters",
      "--max-batch",
      "--max-key-length",
      "--shutdown-grace",
      "--etcd",
      "--prefix",
      "--id",
      "--advertise-address",
      "--lease-ttl",
      "--no-assigner",
      "--handoff-timeout",
      "--drain-timeout",
      "--load-interval",
      "--rebalance-interval",
    ]) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toContain("SHARDLIMIT_CONFIG");
    expect(r.stdout).toContain("SHARDLIMIT_GRPC_PORT");
    expect(r.stdout).toContain("SHARDLIMIT_ETCD");
  });

  it("--version prints the version", () => {
    const r = runCli(["--version"]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
