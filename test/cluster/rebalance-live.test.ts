import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Child as CliProcess } from "../../src/testkit/child.js";
import { BUILT_CLI as CLI, killAllCli, runCli } from "../../src/testkit/cli.js";
import { clearWindowSeconds } from "../../src/testkit/window.js";
import { startCli } from "../server/harness.js";
import { type ClusterHarness, startClusterHarness } from "./cluster-harness.js";

/**
 * Servers started with --no-assigner and one `shardlimit assigner` process: the separate assigner
 * builds the assignment, balances measured load by moving slices while traffic flows, and the
 * moved slices keep their counts. `shardlimit status` shows the result.
 */

/** Clear of a fixed-window boundary while this file runs: it asserts exact counts (see clearWindowSeconds). */
const WINDOW = `${clearWindowSeconds(10 * 60_000)}s`;
const CONFIG = `
domain: api
descriptors:
  - key: k
    rate_limit: { window: ${WINDOW}, requests_per_unit: 1000000 }
`;

describe("load balancing on a live cluster, with a separate assigner", () => {
  let h: ClusterHarness;
  let assigner: CliProcess;
  beforeAll(async () => {
    h = await startClusterHarness({
      servers: 3,
      config: CONFIG,
      extraArgs: ["--no-assigner", "--load-interval", "200", "--rebalance-interval", "600"],
    });
    assigner = startCli([
      "assigner",
      "--etcd",
      h.etcd.url,
      "--prefix",
      h.prefix,
      "--id",
      "the-assigner",
      "--lease-ttl",
      "2",
      "--load-interval",
      "200",
      "--rebalance-interval",
      "600",
    ]);
    await Promise.all(h.servers.map((s) => h.start(s.id)));
    await h.settled();
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
    await killAllCli();
  });

  it("moves slices by measured load while counting stays exact, and status reports it", async () => {
    // Skewed traffic: key i gets about 40/(i+1) calls per round, through every server in turn.
    const keys = Array.from({ length: 30 }, (_, i) => `api/k=hot-${i}`);
    const charged = new Map<string, number>();
    const from = assigner.lines.length;
    let rebalanced = false;
    void assigner
      .waitForLog("a rebalance", (l) => l.msg === "rebalanced by load", { from, timeoutMs: 20_000 })
      .then(
        () => {
          rebalanced = true;
        },
        () => {},
      );
    const until = Date.now() + 15_000;
    let round = 0;
    // `status`, asked while traffic flows so the load it shows is current; asked again until it
    // shows some (a member's load reads 0 for a moment after a rebalance moved its slices).
    let stdout = "";
    let asking: Promise<void> | undefined;
    const withLoad = () => /load imbalance/.test(stdout);
    while (Date.now() < until && !(rebalanced && round > 10 && withLoad())) {
      if (rebalanced && !withLoad() && asking === undefined) {
        asking = promisify(execFile)(process.execPath, [
          CLI,
          "status",
          "--etcd",
          h.etcd.url,
          "--prefix",
          h.prefix,
        ]).then((r) => {
          stdout = r.stdout;
          asking = undefined;
        });
      }
      await Promise.all(
        keys.map(async (key, i) => {
          const n = Math.max(1, Math.round(40 / (i + 1)));
          for (let j = 0; j < n; j++) {
            const via = h.servers[(round + i + j) % 3]!;
            const r = await via.rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
            if (r.results[0]!.error) throw new Error(`${key}: ${r.results[0]!.error.message}`);
            charged.set(key, (charged.get(key) ?? 0) + 1);
          }
        }),
      );
      round++;
    }
    expect(rebalanced).toBe(true);
    for (const key of keys) {
      const r = await h.servers[0]!.rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
      expect(r.results[0]!.remaining).toBe(1_000_000 - charged.get(key)! - 1);
    }
    await asking;
    expect(stdout).toMatch(/generation \d+/);
    expect(stdout).toMatch(/assigner leader the-assigner/);
    for (const s of h.servers) expect(stdout).toContain(s.id);
    expect(stdout).toMatch(/load imbalance \(max\/mean\): \d+\.\d\d/);
    const json = JSON.parse(runCli(["status", "--etcd", h.etcd.url, "--prefix", h.prefix, "--json"]).stdout);
    expect(json.members).toHaveLength(3);
    expect(json.members.every((m: { slices: number }) => m.slices > 0)).toBe(true);
  }, 40_000);

  it("status names an unreachable etcd and exits 1", () => {
    const r = runCli(["status", "--etcd", "http://127.0.0.1:1"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/shardlimit status: /);
  });
});
