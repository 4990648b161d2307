import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EnvoyCode } from "../../src/protocol/messages.js";
import { killAllCli, runCli } from "../../src/testkit/cli.js";
import { httpGet } from "../../src/testkit/http.js";
import { waitFor } from "../../src/testkit/wait.js";
import { desc } from "../server/harness.js";
import {
  CLUSTER_CONFIG as CONFIG,
  countsExactlyAcross,
  CLUSTER_KEYS as KEYS,
  sigkillHeals,
  sigtermMovesCounts,
} from "./cluster-cases.js";
import { type ClusterHarness, startClusterHarness } from "./cluster-harness.js";

/**
 * Three real `shardlimit serve --etcd` processes on a real etcd: counting is exact across the
 * cluster, a SIGTERM hands counts over, a SIGKILL heals within the lease TTL, a rolling restart
 * loses nothing, and etcd going away does not stop serving.
 */

describe("a cluster of three servers", () => {
  let h: ClusterHarness;
  beforeAll(async () => {
    // Rebalancing off: these tests assert on generations; test/cluster/rebalance-live.test.ts covers it.
    h = await startClusterHarness({ servers: 3, config: CONFIG, extraArgs: ["--rebalance-interval", "0"] });
    await h.startAll();
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
    await killAllCli();
  });

  /** Remaining of `key` after a charge of `cost` through server `via`. */
  async function charge(via: string, key: string, cost: number) {
    return (await h.check(via, key, cost)).remaining ?? 0;
  }

  it("every key has one owner; each server owns a share; /readyz is 200 on all", async () => {
    const views = await Promise.all(h.servers.map((s) => h.view(s.id)));
    const owners = new Set<string>();
    for (const key of KEYS) {
      const byView = new Set(views.map((v) => h.ownerIn(v, key)));
      expect(byView.size).toBe(1);
      owners.add([...byView][0]!);
    }
    expect(owners).toEqual(new Set(["s1", "s2", "s3"]));
    for (const s of h.servers) {
      expect((await httpGet(`http://127.0.0.1:${s.httpPort}/readyz`)).status).toBe(200);
    }
  });

  it("counts exactly: Check calls spread over all three see one counter per key", async () => {
    await countsExactlyAcross(h, KEYS);
  });

  it("counts exactly for ShouldRateLimit too, with descriptors owned by different servers in one call", async () => {
    const descriptors = ["a", "b", "c", "d"].map((x) => desc(`k=envoy-${x}`));
    for (let i = 1; i <= 6; i++) {
      const res = await h.servers[i % 3]!.rpc.shouldRateLimit(
        { domain: "api", descriptors, hitsAddend: 3 },
        { deadlineMs: 5000 },
      );
      expect(res.overallCode).toBe(EnvoyCode.OK);
      expect(res.statuses.map((s) => s.limitRemaining)).toEqual([1, 2, 3, 4].map(() => 1_000_000 - 3 * i));
    }
  });

  it("a group and its tenants share one owner, so an atomic check of both works from any server", async () => {
    const items = [
      { key: "api/group=acme", cost: 10 },
      { key: "api/group=acme/tenant=eu", cost: 10 },
    ];
    for (let i = 0; i < 6; i++) {
      const r = await h.servers[i % 3]!.rpc.check({ items, atomic: true }, { deadlineMs: 5000 });
      expect(r.results.map((x) => x.allowed)).toEqual([true, true]);
    }
    // The tenant has 0 left of 60: both are refused together, from any server.
    const r = await h.servers[1]!.rpc.check({ items, atomic: true }, { deadlineMs: 5000 });
    expect(r.results.map((x) => Boolean(x.allowed))).toEqual([false, false]);
    const g = await h.servers[2]!.rpc.check({ items: [{ key: "api/group=acme", cost: 0.5 }] });
    expect(g.results[0]!.remaining).toBe(39);
  });

  it("a ticket taken through one server is settled through another, at the key's owner, once", async () => {
    for (let i = 0; i < 6; i++) {
      const key = `api/k=ticket-${i}`;
      const via = h.servers[i % 3]!.rpc;
      const r = await via.check({ items: [{ key, cost: 500, ticket: true }] }, { deadlineMs: 5000 });
      const ticketId = r.results[0]!.ticketId!;
      expect(ticketId).toBeTruthy();
      const other = h.servers[(i + 1) % 3]!.rpc;
      const s = await other.settle({ key, ticketId, actual: [100] }, { deadlineMs: 5000 });
      expect(s.error ?? null).toBeNull();
      expect(s.remaining).toBe(1_000_000 - 100);
      const again = await h.servers[(i + 2) % 3]!.rpc.settle(
        { key, ticketId, actual: [100] },
        { deadlineMs: 5000 },
      );
      expect(again).toMatchObject({ remaining: 1_000_000 - 100, alreadySettled: true });
    }
  });

  it("SIGTERM of one server moves its slices with their counts: no key regains quota", async () => {
    await sigtermMovesCounts(h, KEYS);
  });

  it("after SIGKILL of one server the others serve every key again within 10 s", async () => {
    await sigkillHeals(h, KEYS);
  });

  it("keeps serving with the last assignment while etcd is down, and catches up when it returns", async () => {
    const g = await h.settled();
    const before = await charge("s1", KEYS[0]!, 1);
    await h.etcd.stop();
    try {
      // Every server still answers for keys it owns and forwards the rest (cost 0 counts as 1).
      for (const [i, key] of KEYS.slice(10, 20).entries()) await charge(h.servers[i % 3]!.id, key, 1);
      expect(await charge("s2", KEYS[0]!, 1)).toBe(before - 1);
    } finally {
      await h.etcd.start();
    }
    // Every member keeps its registration through the outage: for longer than a lease TTL after
    // etcd returns, the assignment stays as it was (nobody was dropped and re-added).
    const t0 = Date.now();
    while (Date.now() - t0 < 3000) {
      for (const s of h.servers) {
        const v = await h.view(s.id);
        expect(v.generation).toBe(g);
        expect(v.members).toHaveLength(3);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // A join after etcd returns gets a newer generation everywhere.
    await h.kill("s3", "SIGTERM");
    await h.start("s3");
    expect(await h.settled()).toBeGreaterThan(g);
  }, 60_000);

  it("the assigner's leader SIGKILLed: another server takes over and reassigns its slices", async () => {
    const status = () =>
      JSON.parse(runCli(["status", "--etcd", h.etcd.url, "--prefix", h.prefix, "--json"]).stdout);
    const before = status();
    const leader = before.leader as string;
    expect(["s1", "s2", "s3"]).toContain(leader);
    await h.kill(leader, "SIGKILL");
    const t0 = Date.now();
    const survivor = h.servers.find((s) => s.id !== leader)!.id;
    let tookMs = 0;
    await waitFor(
      "a new leader and an assignment without the old one",
      async () => {
        const v = await h.view(survivor);
        tookMs = Date.now() - t0;
        return v.generation > before.generation && !v.members.some((m) => m.id === leader);
      },
      10_000,
      50,
    );
    const after = status();
    expect(after.leader).not.toBe(leader);
    console.log(
      `assigner leader ${leader} SIGKILLed: ${after.leader} wrote generation ${after.generation}, served ${tookMs} ms after the kill`,
    );
    for (const key of KEYS) await charge(survivor, key, 1);
    await h.start(leader);
    await h.settled();
  }, 60_000);

  it("a rolling restart of every server under load loses and doubles no count, with no failed call", async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `api/k=rolling-${i}`);
    const admitted = new Map<string, number>(keys.map((k) => [k, 0]));
    const down = new Set<string>();
    let running = true;
    let calls = 0;
    let failures = 0;
    const problems: string[] = [];
    const workers = Array.from({ length: 8 }, async (_, w) => {
      for (let i = w; running; i++) {
        const up = h.servers.filter((s) => !down.has(s.id));
        const via = up[i % up.length]!;
        const key = keys[(i * 7 + w) % keys.length]!;
        try {
          const r = await via.rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
          const res = r.results[0]!;
          if (res.error) {
            failures++;
            problems.push(`${key} via ${via.id}: ${res.error.message}`);
          } else if (res.allowed) admitted.set(key, admitted.get(key)! + 1);
        } catch (err) {
          failures++;
          problems.push(`${key} via ${via.id}: ${(err as Error).message}`);
        }
        calls++;
      }
    });
    const t0 = Date.now();
    for (const s of h.servers) {
      // As a load balancer does on a failing /readyz: no new calls to it, then SIGTERM.
      down.add(s.id);
      await new Promise((r) => setTimeout(r, 100));
      await h.kill(s.id, "SIGTERM");
      await h.start(s.id);
      // Back in rotation once the cluster has settled: the restarted server is not ready (/readyz
      // 503) while the ranges it is given wait for their handoff, and a load balancer sends it
      // nothing until then (calls through it meanwhile could run out of retries: SLICE_NOT_READY).
      await h.settled();
      down.delete(s.id);
    }
    running = false;
    await Promise.all(workers);
    console.log(`rolling restart of 3 servers: ${Date.now() - t0} ms, ${calls} checks, ${failures} failed`);
    expect(problems).toEqual([]);
    for (const key of keys) {
      const r = await h.server("s1").rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
      expect(r.results[0]!.remaining).toBe(1_000_000 - admitted.get(key)! - 1);
    }
  }, 60_000);
});
