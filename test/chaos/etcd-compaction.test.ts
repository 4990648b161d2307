import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClusterView } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { ownerIn } from "../../src/testkit/cluster-view.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";
import { crashes, type Link, printFigures, problemLines, startLink } from "./link-harness.js";
import { keysOwnedBy, syncLoad } from "./sync-load.js";

/**
 * Chaos: servers cut from etcd while the cluster prefix moves on and etcd compacts its history,
 * then reconnected. s1, s2 and s3 reach etcd through links; s4 directly. Under sync Check load
 * (round robin over s1..s3, directly): s1's and s2's etcd links are cut for longer than two lease
 * TTLs; meanwhile s4 leaves (SIGTERM) and comes back (the assignment changes twice, written by
 * whoever leads among s3/s4), and etcd is compacted to its current revision, so the watches of
 * s1 and s2 cannot resume where they stopped. After the restore every server must reach the
 * newest generation with all four members; then the assigner's leader is SIGKILLed and a new one
 * must assign its slices within a few lease TTLs. No crash.
 *
 * Epsilon 0.05: answers attributed to the wrong window at a boundary. Expected, pinned by the
 * default run and asked for by CHAOS_STRICT=1: the keys of s1/s2 move without a handoff while
 * they are cut from etcd; sync-only keys then start empty on the new owner mid-window (the known
 * issue being fixed in main), up to 2x in windows during the cut plus a lease TTL.
 */

const WINDOW_MS = 2000;
const LIMIT = 50;
const CONFIG = `
domain: chaos
descriptors:
  - key: k
    rate_limit: { window: 2s, requests_per_unit: ${LIMIT} }
`;
const EPSILON = 0.05;
const LEASE_TTL_S = 2;
const TICK_MS = 20;
const LOAD_MS = 16_000;
const CUT_AT_MS = 3_000;
const S4_STOP_AT_MS = 5_000;
const S4_START_AT_MS = 7_000;
const COMPACT_AT_MS = 8_500;
const RESTORE_AT_MS = 10_000;

describe("chaos: servers cut from etcd while the prefix changes and etcd compacts, then reconnected", () => {
  let etcd: EtcdProcess;
  let client: Etcd3;
  const links = new Map<string, Link>();
  const servers: ServerProcess[] = [];
  const rpcs = new Map<string, RateLimiterRpc>();
  const prefix = `/chaos-compact${Date.now().toString(36)}/`;

  const views = async (ids: readonly string[]) =>
    (
      await Promise.all(
        ids.map((id) =>
          rpcs
            .get(id)!
            .getClusterView({ knownGeneration: 0 }, { deadlineMs: 1500 })
            .then((v) => [id, v] as const)
            .catch(() => undefined),
        ),
      )
    ).filter((x): x is readonly [string, ClusterView] => x !== undefined);

  beforeAll(async () => {
    ensureBuilt();
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.url });
    const configPath = writeConfig(CONFIG);
    for (const id of ["s1", "s2", "s3", "s4"]) {
      const link = id === "s4" ? undefined : await startLink(etcd.url);
      if (link) links.set(id, link);
      servers.push(
        await serverProcess({
          id,
          configPath,
          etcdUrl: link ? link.url : etcd.url,
          prefix,
          cli: "built",
          leaseTtlSeconds: LEASE_TTL_S,
          logLevel: "info",
          ready: "spawned",
          // s4's drain (SIGTERM mid-run) gives up in time for it to come back during the cut.
          ...(id === "s4" ? { extraArgs: ["--drain-timeout", "1500"] } : {}),
        }),
      );
    }
    await Promise.all(servers.map((s) => s.start()));
    await waitAllReady(servers, 30_000);
    for (const s of servers) rpcs.set(s.id, connect(s.address, { "grpc.initial_reconnect_backoff_ms": 100 }));
    await waitFor(
      "four servers on one generation",
      async () => {
        const v = await views(["s1", "s2", "s3", "s4"]);
        return (
          v.length === 4 && v.every(([, x]) => x.members.length === 4 && x.generation === v[0]![1].generation)
        );
      },
      20_000,
      100,
    );
  }, 90_000);

  afterAll(async () => {
    client?.close();
    for (const r of rpcs.values()) r.close();
    await Promise.all(servers.map((s) => s.stop("SIGKILL").catch(() => {})));
    for (const l of links.values()) await l.close();
    await etcd?.destroy();
    await killAllCli();
  });

  it("converges on the newest generation after the reconnect, fails over after, no crash, bound (strict with CHAOS_STRICT=1)", async () => {
    const [[, view0]] = (await views(["s1"])) as [readonly [string, ClusterView]];
    const keys = keysOwnedBy(view0, { s1: 1, s2: 1, s3: 1, s4: 1 }, "chaos/k=c");
    expect(keys).toHaveLength(4);
    const s4 = servers.find((s) => s.id === "s4")!;
    const done = new Set<string>();
    let compactedAt = "";
    const r = await syncLoad({
      keys,
      rpcs: () => ["s1", "s2", "s3"].map((id) => rpcs.get(id)!),
      limit: LIMIT,
      windowMs: WINDOW_MS,
      tickMs: TICK_MS,
      loadMs: LOAD_MS,
      onTick: async (elapsed) => {
        if (!done.has("cut") && elapsed >= CUT_AT_MS) {
          done.add("cut");
          links.get("s1")!.cut();
          links.get("s2")!.cut();
          console.log(`[compact] cut s1 and s2 from etcd at ${elapsed} ms`);
        }
        if (!done.has("stop") && elapsed >= S4_STOP_AT_MS) {
          done.add("stop");
          void s4.stop("SIGTERM");
          console.log(`[compact] SIGTERM s4 at ${elapsed} ms`);
        }
        // Once the old process has exited (its drain has a deadline): the new one takes its ports.
        const c = s4.child?.child;
        if (
          !done.has("start") &&
          elapsed >= S4_START_AT_MS &&
          c &&
          (c.exitCode !== null || c.signalCode !== null)
        ) {
          done.add("start");
          void s4.start();
          console.log(`[compact] s4 started again at ${elapsed} ms (old one: ${c.exitCode ?? c.signalCode})`);
        }
        if (!done.has("compact") && elapsed >= COMPACT_AT_MS) {
          done.add("compact");
          await client.put(`${prefix}chaos-marker`).value(String(elapsed));
          const rev = (await client.get(`${prefix}chaos-marker`).exec()).header.revision;
          await client.kv.compact({ revision: rev, physical: true });
          compactedAt = rev;
          console.log(`[compact] compacted etcd to revision ${rev} at ${elapsed} ms`);
        }
        if (!done.has("restore") && elapsed >= RESTORE_AT_MS) {
          done.add("restore");
          links.get("s1")!.restore();
          links.get("s2")!.restore();
          console.log(`[compact] restored s1 and s2 at ${elapsed} ms`);
        }
      },
    });
    expect(compactedAt).not.toBe("");
    // s4 came back (if its old process outlived the run, start it now: the checks need 4 members).
    if (!done.has("start")) {
      console.log("[compact] s4 had not exited by the end of the load");
      await s4.stop("SIGKILL");
      await s4.start();
    }

    // Every server reaches the newest generation with four members.
    const ids = ["s1", "s2", "s3", "s4"];
    let seen: (readonly [string, ClusterView])[] = [];
    const from = Date.now();
    await waitFor(
      "four servers on one generation of four members",
      async () => {
        seen = await views(ids);
        return (
          seen.length === 4 &&
          seen.every(([, v]) => v.members.length === 4 && v.generation === seen[0]![1].generation)
        );
      },
      20_000,
      200,
    ).catch(() => {});
    const convergedMs = Date.now() - from;
    console.log(
      `[compact] after the load: ${seen.map(([id, v]) => `${id} gen ${v.generation} members ${v.members.length}`).join(", ")} (${convergedMs} ms)`,
    );
    for (const key of keys)
      console.log(
        `[compact] ${key} owner before ${ownerIn(view0, key)}, after ${seen[0] ? ownerIn(seen[0][1], key) : "?"}`,
      );

    // Failover after the reconnect: kill the leader, a new one assigns its slices.
    const leaderKey = `${prefix}assigner/leader`;
    const leader = await client.get(leaderKey).string();
    expect(leader).toBeDefined();
    const genBefore = seen[0]?.[1].generation ?? 0;
    const dead = servers.find((s) => s.id === leader)!;
    const killedAt = Date.now();
    await dead.stop("SIGKILL");
    const rest = ids.filter((id) => id !== leader);
    let newLeader: string | null = null;
    let after: (readonly [string, ClusterView])[] = [];
    await waitFor(
      "a new leader's generation without the dead one",
      async () => {
        newLeader = await client.get(leaderKey).string();
        after = await views(rest);
        return (
          newLeader !== null &&
          newLeader !== leader &&
          after.length === 3 &&
          after.every(
            ([, v]) =>
              v.generation > genBefore && v.generation === after[0]![1].generation && v.members.length === 3,
          ) &&
          !after[0]![1].members.some((m) => m.id === leader)
        );
      },
      5 * LEASE_TTL_S * 1000,
      100,
    ).catch(() => {});
    const failoverMs = Date.now() - killedAt;
    console.log(
      `[compact] killed leader ${leader}: new leader ${newLeader}, ${after.map(([id, v]) => `${id} gen ${v.generation}/${v.members.length}`).join(", ")} after ${failoverMs} ms`,
    );

    const crashed = crashes(servers, "compact", new Set([leader!]));
    printFigures("compact", r.checker, {
      epsilon: EPSILON,
      t0: r.t0,
      errors: r.errors,
      crashed,
      doubled: r.doubled,
      extra: `sent ${r.sent} (skipped ${r.skipped}), converged ${convergedMs} ms after the load, failover ${failoverMs} ms`,
    });
    for (const w of r.doubledWindows) console.log(`[compact] doubled? ${w}`);
    for (const s of servers) for (const l of problemLines(s, 8)) console.log(`[compact] ${l}`);

    expect(crashed).toEqual([]);
    expect(seen).toHaveLength(4);
    expect(new Set(seen.map(([, v]) => v.generation)).size).toBe(1);
    expect(seen[0]![1].members).toHaveLength(4);
    expect(newLeader).not.toBe(leader);
    expect(failoverMs).toBeLessThan(5 * LEASE_TTL_S * 1000);
    expect(r.doubled).toBe(0);
    expect(r.checker.duplicates()).toEqual([]);
    // The load saturated the keys (so the bound was tested): on a shared 2-core machine calls
    // pile up behind a cut, so asked of the busiest key only; per key figures are printed.
    expect(Math.max(...Object.values(r.checker.maxRatioByKey()))).toBeGreaterThanOrEqual(0.9);
    const violations = r.checker.check(EPSILON);
    if (process.env.CHAOS_STRICT === "1") {
      expect(violations).toEqual([]);
    } else {
      for (const v of violations) {
        expect(v.windowStart).toBeGreaterThanOrEqual(r.t0 + CUT_AT_MS - WINDOW_MS);
        expect(v.windowStart).toBeLessThanOrEqual(r.t0 + RESTORE_AT_MS + LEASE_TTL_S * 1000);
        expect(v.ratio).toBeLessThanOrEqual(2 * (1 + EPSILON));
      }
    }
  }, 120_000);
});
