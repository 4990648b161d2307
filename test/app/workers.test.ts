import { existsSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLimiter } from "../../src/client/create.js";
import { connect } from "../../src/protocol/rpc.js";
import type { Child } from "../../src/testkit/child.js";
import { ensureBuilt, killAllCli, runCli, spawnCli } from "../../src/testkit/cli.js";
import { httpGet } from "../../src/testkit/http.js";
import { freePort } from "../../src/testkit/ports.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";
import { clearWindowSeconds } from "../../src/testkit/window.js";
import { desc } from "../server/harness.js";

/**
 * `serve --workers 2` standalone, as a real process: two workers in an embedded cluster (a private
 * etcd), each owning slices; counts are exact whichever worker is called (forwarding), a gateway
 * reports to both, the supervisor's /readyz and /metrics cover both, a SIGKILLed worker is started
 * again with its counts recovered from its buddy, and SIGTERM stops everything with exit 0.
 */

/** Clear of a fixed-window boundary while this file runs: it asserts exact counts (see clearWindowSeconds). */
const WINDOW = `${clearWindowSeconds(10 * 60_000)}s`;
const CONFIG = `
domain: api
descriptors:
  - key: m
    rate_limit: { window: ${WINDOW}, requests_per_unit: 1000 }
`;
const KEYS = Array.from({ length: 16 }, (_, i) => `k${i}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The built CLI: `serve --workers 2` standalone on loopback, every port chosen by the OS unless
 * `httpPort` is given; `extra` flags after.
 */
function serveTwoWorkers(config: string, httpPort = 0, extra: string[] = []): Child {
  const loopback = [
    "--grpc-host",
    "127.0.0.1",
    "--http-host",
    "127.0.0.1",
    "--grpc-port",
    "0",
    "--http-port",
    String(httpPort),
  ];
  return spawnCli(["serve", "--config", config, ...loopback, "--workers", "2", ...extra], { cli: "built" });
}

/** Two workers serving: the supervisor, its HTTP port, the workers, the private etcd's data dir. */
async function startTwoWorkers(): Promise<{
  p: Child;
  config: string;
  httpPort: number;
  workers: WorkerInfo[];
  dataDir: string;
}> {
  ensureBuilt();
  const config = writeConfig(CONFIG);
  const p = serveTwoWorkers(config);
  const { log } = await p.waitForLog("workers serving", (l) => l.msg === "shardlimit workers serving", {
    timeoutMs: 60_000,
  });
  const etcd = p.lines.find((l) => l.includes('"private etcd for the workers started"'))!;
  const dataDir = (JSON.parse(etcd) as { dataDir: string }).dataDir;
  return { p, config, httpPort: log.httpPort as number, workers: log.workers as WorkerInfo[], dataDir };
}

interface WorkerInfo {
  worker: number;
  pid: number;
  grpcPort: number;
  httpPort: number;
}

/** Per worker, the value of one unlabelled-but-`worker` sample in the supervisor's /metrics. */
function perWorker(metrics: string, name: string): number[] {
  const out: number[] = [];
  for (const line of metrics.split("\n")) {
    const m = line.match(new RegExp(`^${name}\\{worker="(\\d+)"[^}]*\\} (\\S+)$`));
    if (m) out[Number(m[1])] = (out[Number(m[1])] ?? 0) + Number(m[2]);
  }
  return out;
}

describe("shardlimit serve --workers 2 (standalone)", () => {
  let p: Child;
  let httpPort: number;
  let workers: WorkerInfo[];
  const charged = new Map<string, number>();

  beforeAll(async () => {
    ({ p, httpPort, workers } = await startTwoWorkers());
  }, 90_000);
  afterAll(async () => {
    await killAllCli();
  });

  /** Charges `key` once through worker `w`; what is left. */
  async function check(w: number, key: string): Promise<number> {
    const rpc = connect(`127.0.0.1:${workers[w]!.grpcPort}`);
    try {
      const r = await rpc.check({ items: [{ key: `api/m=${key}`, cost: 1 }] }, { deadlineMs: 5000 });
      if (r.results[0]!.error) throw new Error(r.results[0]!.error.message);
      charged.set(key, (charged.get(key) ?? 0) + 1);
      return r.results[0]!.remaining ?? -1;
    } finally {
      rpc.close();
    }
  }

  it("is ready only with both workers, and each worker owns slices of its own", async () => {
    expect(workers).toHaveLength(2);
    expect(workers[0]!.grpcPort).not.toBe(workers[1]!.grpcPort);
    await waitFor(
      "/readyz 200",
      async () => (await httpGet(`http://127.0.0.1:${httpPort}/readyz`)).status === 200,
    );
    // A worker is ready as a member before the assigner has given it slices (it forwards until
    // then): a fresh-clone CI run read the metrics in that moment, with one worker at 0 slices.
    let slices: number[] = [];
    await waitFor(
      "both workers to own slices",
      async () => {
        const metrics = (await httpGet(`http://127.0.0.1:${httpPort}/metrics`)).body;
        slices = perWorker(metrics, "shardlimit_slices_owned");
        return slices.length === 2 && slices.every((n) => n > 0);
      },
      20_000,
    );
    expect(slices).toHaveLength(2);
    expect(slices[0]).toBeGreaterThan(0);
    expect(slices[1]).toBeGreaterThan(0);
  });

  it("each worker runs with its share of the cores as its V8 thread pool", () => {
    const pool = `--v8-pool-size=${Math.max(1, Math.floor(availableParallelism() / 2))}`;
    for (const w of workers) {
      expect(readFileSync(`/proc/${w.pid}/cmdline`, "utf8").split("\0")).toContain(pool);
    }
  });

  it("Check counts exactly across workers, whichever one is called", async () => {
    for (let round = 0; round < 4; round++)
      for (const key of KEYS) {
        const left = await check(round % 2, key);
        expect(left).toBe(1000 - charged.get(key)!);
      }
    // Both workers hold counters: each key lives on its owner, calls to the other are forwarded.
    const held = perWorker(
      (await httpGet(`http://127.0.0.1:${httpPort}/metrics`)).body,
      "shardlimit_counters",
    );
    expect(held[0]! + held[1]!).toBe(KEYS.length);
    expect(held[0]).toBeGreaterThan(0);
    expect(held[1]).toBeGreaterThan(0);
  });

  it("ShouldRateLimit counts exactly across workers", async () => {
    const rpcs = workers.map((w) => connect(`127.0.0.1:${w.grpcPort}`));
    try {
      for (let i = 0; i < 6; i++) {
        const r = await rpcs[i % 2]!.shouldRateLimit(
          { domain: "api", descriptors: [desc("m=envoy1"), desc("m=envoy2")], hitsAddend: 1 },
          { deadlineMs: 5000 },
        );
        expect(r.statuses.map((s) => s.limitRemaining)).toEqual([999 - i, 999 - i]);
      }
    } finally {
      for (const r of rpcs) r.close();
    }
  });

  it("a gateway client given the entry point reports to both workers", async () => {
    const gw = await createLimiter({
      servers: [`127.0.0.1:${workers[0]!.grpcPort}`],
      clientId: "gw-workers",
      reportIntervalMs: 50,
      viewRefreshMs: 500,
    });
    try {
      const entries = () =>
        httpGet(`http://127.0.0.1:${httpPort}/metrics`).then((r) =>
          perWorker(r.body, "shardlimit_report_entries_count"),
        );
      await waitFor(
        "reports on both workers",
        async () => {
          for (let i = 0; i < 32; i++) gw.decide(`api/m=gw${i}`);
          await sleep(100);
          const n = await entries();
          return (n[0] ?? 0) > 0 && (n[1] ?? 0) > 0;
        },
        15_000,
      );
    } finally {
      gw.close();
    }
  });

  it("a SIGKILLed worker is started again; its keys' counts survive (buddy copies) and /readyz recovers", async () => {
    await sleep(500); // past the replicate interval (200 ms): the buddies hold every count
    const from = p.lines.length;
    process.kill(workers[1]!.pid, "SIGKILL");
    const { log } = await p.waitForLog("worker restarted", (l) => l.msg === "worker restarted", {
      from,
      timeoutMs: 30_000,
    });
    workers[1] = { ...workers[1]!, pid: log.pid as number, grpcPort: log.grpcPort as number };
    await waitFor(
      "/readyz 200 again",
      async () => (await httpGet(`http://127.0.0.1:${httpPort}/readyz`)).status === 200,
      30_000,
    );
    for (const key of KEYS) expect(await check(1, key)).toBe(1000 - charged.get(key)!);
  }, 60_000);

  it("SIGTERM stops both workers and the private etcd, exit 0", async () => {
    const pids = workers.map((w) => w.pid);
    p.child.kill("SIGTERM");
    const { code } = await p.exited;
    expect(code).toBe(0);
    for (const pid of pids) {
      expect(pid).toBeGreaterThan(0);
      expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    }
  }, 30_000);
});

describe("serve --workers: bad values and a missing etcd are refused, naming what is wrong", () => {
  it("--workers 0 and --workers many exit 2 naming the flag; so does --limits-from etcd standalone", () => {
    ensureBuilt();
    const config = writeConfig(CONFIG);
    for (const bad of ["0", "many", "257"]) {
      const r = runCli(["serve", "--config", config, "--workers", bad]);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain("--workers must be a whole number from 1 to 256");
    }
    const env = runCli(["serve", "--config", config], { SHARDLIMIT_WORKERS: "-1" });
    expect(env.status).toBe(2);
    expect(env.stderr).toContain("--workers");
    const fromEtcd = runCli(["serve", "--limits-from", "etcd", "--workers", "2"]);
    expect(fromEtcd.status).toBe(2);
    expect(fromEtcd.stderr).toContain("--limits-from etcd needs --etcd");
  });

  it("standalone above 1 without etcd on PATH says so and exits 1, leaving nothing running", () => {
    const config = writeConfig(CONFIG);
    const r = runCli(
      [
        "serve",
        "--config",
        config,
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--http-host",
        "127.0.0.1",
        "--workers",
        "2",
      ],
      { PATH: "/nonexistent" },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("needs `etcd` on PATH");
  });
});

/** Pids of the processes whose command line contains `text`. */
function processesWith(text: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").includes(text)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe("serve --workers 2: what ends the whole server", () => {
  afterAll(async () => {
    await killAllCli();
  });

  it("its workers and its private etcd stop when it is SIGKILLed, and etcd's data directory goes", async () => {
    const { p, config, workers, dataDir } = await startTwoWorkers();
    const pids = workers.map((w) => w.pid);
    expect(processesWith(dataDir).length).toBeGreaterThan(0);
    p.child.kill("SIGKILL");
    await p.exited;
    await waitFor(
      "workers and etcd gone",
      () =>
        processesWith(dataDir).length === 0 &&
        !existsSync(dataDir) &&
        pids.every((pid) => processesWith(`${config}`).indexOf(pid) < 0),
      20_000,
    );
  }, 90_000);

  it("Ctrl-C (SIGINT to it, its workers and its private etcd's processes at once) ends them all and removes etcd's data directory", async () => {
    const { p, workers, dataDir } = await startTwoWorkers();
    const group = [p.pid, ...workers.map((w) => w.pid), ...processesWith(dataDir)];
    expect(group.length).toBeGreaterThan(3);
    for (const pid of group) process.kill(pid, "SIGINT");
    await p.exited;
    expect(existsSync(dataDir)).toBe(false);
    await waitFor("workers and etcd gone", () => processesWith(dataDir).length === 0, 20_000);
    expect(existsSync(dataDir)).toBe(false);
  }, 90_000);

  it("the sixth crash of one worker within a minute ends everything with exit 1 (the orchestrator restarts it)", async () => {
    const { p, workers, dataDir } = await startTwoWorkers();
    let pid = workers[0]!.pid;
    for (let crash = 1; crash <= 5; crash++) {
      const from = p.lines.length;
      process.kill(pid, "SIGKILL");
      const restarted = await p.waitForLog("worker restarted", (l) => l.msg === "worker restarted", {
        from,
        timeoutMs: 30_000,
      });
      pid = restarted.log.pid as number;
    }
    const other = workers[1]!.pid;
    process.kill(pid, "SIGKILL");
    const { code } = await p.exited;
    expect(code).toBe(1);
    expect(p.lines.some((l) => l.includes("crashed 6 times within a minute"))).toBe(true);
    await waitFor("the other worker and etcd gone", () => processesWith(dataDir).length === 0, 20_000);
    expect(() => process.kill(other, 0)).toThrow(/ESRCH/);
  }, 120_000);
});

describe("serve --workers 2: the supervisor's HTTP port from the start, whatever the log level", () => {
  afterAll(async () => {
    await killAllCli();
  });

  it("answers /readyz 503 while the private etcd starts, then 200, with --log-level warn too", async () => {
    ensureBuilt();
    const httpPort = await freePort();
    const p = serveTwoWorkers(writeConfig(CONFIG), httpPort, ["--log-level", "warn"]);
    let exited = false;
    void p.exited.then(() => {
      exited = true;
    });
    // Asked from the moment the port opens (before the private etcd is up) until ready: a
    // supervisor that fails to answer, or never learns its workers' ports, does not get there.
    const seen = new Set<number>();
    await waitFor(
      "/readyz 200",
      async () => {
        try {
          const { status } = await httpGet(`http://127.0.0.1:${httpPort}/readyz`);
          seen.add(status);
          return status === 200;
        } catch {
          return false; // not listening yet
        }
      },
      60_000,
      5,
      () => (exited ? new Error(`the server exited while starting:\n${p.output()}`) : undefined),
    );
    expect([...seen].sort()).toEqual([200, 503]);
    const metrics = (await httpGet(`http://127.0.0.1:${httpPort}/metrics`)).body;
    expect(metrics).toContain('worker="0"');
    expect(metrics).toContain('worker="1"');
    p.child.kill("SIGTERM");
    expect((await p.exited).code).toBe(0);
  }, 90_000);
});
