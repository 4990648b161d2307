import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { ownerIn } from "../../src/testkit/cluster-view.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";
import { crashes, type Link, printFigures, problemLines, startLink } from "./link-harness.js";
import { keysOwnedBy, syncLoad } from "./sync-load.js";

/**
 * Chaos: peers cut from each other while etcd stays reachable. Each server advertises a link of
 * its own (--advertise-address), so every peer call (forwarded Check parts, handoffs, the lease
 * guard's GetClusterView) to it goes through that link; this test's callers reach the servers
 * directly, round robin over s1..s3, so two thirds of the calls are forwarded. Midway, s3's peer
 * links are cut both ways: its own link refuses everyone, and every other server's link refuses
 * connections from s3's process (found by pid). During the cut s4 joins: the assignment changes,
 * slices move to s4 (from s3 too: that handoff cannot get through) while s3 stays a member with
 * a fresh lease. Then the links come back and everyone must converge on one generation.
 *
 * Judged per key per window on the callers' answers. Epsilon 0.05: answers attributed to the
 * wrong window at a boundary (a call or two of 50). A slice whose handoff cannot get through (to
 * or from s3) waits, not ready, past the sender's 10 s of retries (the default handoff timeout),
 * so it is served with its counts once the links are back; with a 3 s timeout it was served
 * empty while its counts were still on their way (1.42x in one run). The default run still
 * allows excess in windows up to a handoff timeout after the restore; CHAOS_STRICT=1 asks for
 * the bound everywhere.
 * Doubling: forwarded parts are retried with the same part ids, so a part must be charged once;
 * measured as units counted beyond the admitted answers in windows with no error for the key.
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
const TICK_MS = 20; // 50 calls/s per key: 2x the limit
const LOAD_MS = 18_000;
const CUT_AT_MS = 4_000;
const JOIN_AT_MS = 6_000;
const RESTORE_AT_MS = 12_000;
/** The servers' default: a receiver waits past the sender's 10 s of retries. */
const HANDOFF_TIMEOUT_MS = 12_000;

describe("chaos: one server's peer links cut (etcd reachable), a member joins meanwhile", () => {
  let etcd: EtcdProcess;
  const links = new Map<string, Link>();
  const servers: ServerProcess[] = [];
  const rpcs: RateLimiterRpc[] = [];
  const prefix = `/chaos-peers${Date.now().toString(36)}/`;
  let configPath: string;

  async function server(id: string): Promise<ServerProcess> {
    const link = await startLink();
    const s = await serverProcess({
      id,
      configPath,
      etcdUrl: etcd.url,
      prefix,
      cli: "built",
      leaseTtlSeconds: 2,
      logLevel: "info",
      ready: "spawned",
      extraArgs: ["--advertise-address", link.address, "--handoff-timeout", String(HANDOFF_TIMEOUT_MS)],
    });
    link.target = s.address;
    links.set(id, link);
    servers.push(s);
    return s;
  }

  beforeAll(async () => {
    ensureBuilt();
    etcd = await startEtcd();
    configPath = writeConfig(CONFIG);
    for (const id of ["s1", "s2", "s3"]) await server(id);
    await Promise.all(servers.map((s) => s.start()));
    await waitAllReady(servers, 30_000);
    for (const s of servers) rpcs.push(connect(s.address, { "grpc.initial_reconnect_backoff_ms": 100 }));
    await waitFor(
      "three servers on one generation",
      async () => {
        const v = await Promise.all(
          rpcs.map((r) => r.getClusterView({ knownGeneration: 0 }, { deadlineMs: 2000 })),
        );
        return v.every((x) => x.members.length === 3 && x.generation === v[0]!.generation);
      },
      20_000,
      100,
    );
  }, 90_000);

  afterAll(async () => {
    for (const r of rpcs) r.close();
    await Promise.all(servers.map((s) => s.stop("SIGKILL").catch(() => {})));
    for (const l of links.values()) await l.close();
    await etcd?.destroy();
    await killAllCli();
  });

  it("forwarded parts charged once, bound holds outside failed handoffs (strict: everywhere), everyone converges", async () => {
    const view = await rpcs[0]!.getClusterView({ knownGeneration: 0 }, { deadlineMs: 2000 });
    const keys = keysOwnedBy(view, { s1: 2, s2: 2, s3: 2 }, "chaos/k=p");
    expect(keys).toHaveLength(6);
    const s3 = servers.find((s) => s.id === "s3")!;
    const s3pid = new Set([s3.pid()!]);
    let phase = 0;
    let s4: ServerProcess | undefined;
    const marks: Record<string, number> = {};
    const r = await syncLoad({
      keys,
      rpcs: () => rpcs,
      limit: LIMIT,
      windowMs: WINDOW_MS,
      tickMs: TICK_MS,
      loadMs: LOAD_MS,
      onTick: async (elapsed) => {
        if (phase === 0 && elapsed >= CUT_AT_MS) {
          phase++;
          links.get("s3")!.cut();
          for (const [id, l] of links) if (id !== "s3") l.blockFrom(s3pid);
          marks.cut = Date.now();
          console.log(`[peers] cut s3's peer links at ${elapsed} ms`);
        } else if (phase === 1 && elapsed >= JOIN_AT_MS) {
          phase++;
          s4 = await server("s4");
          links.get("s4")!.blockFrom(s3pid);
          await s4.start();
          console.log(`[peers] s4 started at ${elapsed} ms`);
        } else if (phase === 2 && elapsed >= RESTORE_AT_MS) {
          phase++;
          for (const l of links.values()) {
            l.restore();
            l.blockFrom(new Set());
          }
          marks.restore = Date.now();
          console.log(`[peers] restored at ${elapsed} ms`);
        }
      },
    });
    expect(s4).toBeDefined();
    // Everyone converges on one generation with four members.
    const allRpcs = [...rpcs, connect(s4!.address)];
    let views: Awaited<ReturnType<RateLimiterRpc["getClusterView"]>>[] = [];
    const convergeFrom = Date.now();
    await waitFor(
      "four servers on one generation",
      async () => {
        views = await Promise.all(
          allRpcs.map((x) =>
            x.getClusterView({ knownGeneration: 0 }, { deadlineMs: 2000 }).catch(() => undefined),
          ),
        ).then((v) => v.filter((x) => x !== undefined));
        return (
          views.length === 4 &&
          views.every((x) => x.members.length === 4 && x.generation === views[0]!.generation)
        );
      },
      20_000,
      200,
    ).catch(() => {});
    const convergeMs = Date.now() - convergeFrom;
    allRpcs[3]!.close();
    console.log(
      `[peers] generations after restore: ${views.map((v) => `${v.generation}/${v.members.length}`).join(" ")} (${convergeMs} ms after the load)`,
    );
    const last = views[0];
    for (const key of keys)
      console.log(
        `[peers] ${key} owner before ${ownerIn(view, key)}, after ${last ? ownerIn(last, key) : "?"}`,
      );
    const crashed = crashes(servers, "peers");
    printFigures("peers", r.checker, {
      epsilon: EPSILON,
      t0: r.t0,
      errors: r.errors,
      crashed,
      doubled: r.doubled,
      extra: `sent ${r.sent} (skipped ${r.skipped}), link cuts ${[...links].map(([id, l]) => `${id}:${l.stats.cut}`).join(" ")}`,
    });
    for (const w of r.doubledWindows) console.log(`[peers] doubled? ${w}`);
    for (const s of servers) for (const l of problemLines(s, 8)) console.log(`[peers] ${l}`);

    expect(crashed).toEqual([]);
    expect(views.length).toBe(4);
    expect(new Set(views.map((v) => v.generation)).size).toBe(1);
    expect(views[0]!.members).toHaveLength(4);
    // The cut was felt: s3's forwarded calls failed.
    expect(r.errors.counts.size).toBeGreaterThan(0);
    expect(r.doubled).toBe(0);
    expect(r.checker.duplicates()).toEqual([]);
    // The load saturated the keys (so the bound was tested): on a shared 2-core machine calls
    // pile up behind a cut, so asked of the busiest key only; per key figures are printed.
    expect(Math.max(...Object.values(r.checker.maxRatioByKey()))).toBeGreaterThanOrEqual(0.9);
    const violations = r.checker.check(EPSILON);
    if (process.env.CHAOS_STRICT === "1") {
      expect(violations).toEqual([]);
    } else {
      // Only in windows from the join to a handoff timeout after the restore, at most 2x.
      for (const v of violations) {
        expect(v.windowStart).toBeGreaterThanOrEqual(r.t0 + JOIN_AT_MS - WINDOW_MS);
        expect(v.windowStart).toBeLessThanOrEqual(r.t0 + RESTORE_AT_MS + HANDOFF_TIMEOUT_MS);
        expect(v.ratio).toBeLessThanOrEqual(2 * (1 + EPSILON));
      }
    }
  }, 120_000);
});
