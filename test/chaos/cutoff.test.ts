import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorName } from "../../src/protocol/item-errors.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { ownerIn } from "../../src/testkit/cluster-view.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { decidedAt, InvariantChecker } from "../../src/testkit/invariants.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";
import { startProxy, type TcpProxy } from "../cluster/etcd-harness.js";

/**
 * Chaos: one server of three (s3) reaches etcd only through a proxy; midway through sync `Check`
 * load sent round robin through all three servers, its etcd link is cut for longer than the lease
 * TTL, so the assigner moves s3's slices while clients still reach s3; then the link comes back.
 * Every answer goes into an InvariantChecker: per key and per fixed window, what callers were told
 * was admitted should stay within the limit x (1 + EPSILON) (two owners deciding one key at once
 * would show as up to 2x). Before the new owner reclaimed s3's counters (Peer.Reclaim), the window
 * in which s3's keys moved admitted 1.1-1.7x: the new owner started without s3's counts.
 */

const WINDOW_MS = 2000;
const LIMIT = 100;
const CONFIG = `
domain: chaos
descriptors:
  - key: k
    rate_limit: { window: 2s, requests_per_unit: ${LIMIT} }
`;
/** Slack for answers attributed to the wrong window at a boundary (one or two calls of 100). */
const EPSILON = 0.05;
const LEASE_TTL_S = 2;
const TICK_MS = 10; // one call per key per tick: 4 keys -> 400 calls/s in all
const LOAD_MS = 14_000;
const CUT_AT_MS = 4_000;
const CUT_FOR_MS = 5_000; // > 2 x the lease TTL
const MAX_IN_FLIGHT = 200;

/** Each server's info-and-above log lines from 2 s before `t0` on, by time since `t0`, oldest first. */
function clusterEvents(servers: readonly ServerProcess[], t0: number): string[] {
  const events: { at: number; line: string }[] = [];
  for (const s of servers) {
    for (const raw of s.child?.lines ?? []) {
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        continue;
      }
      const at = Number(e.time) - t0;
      if (!(at >= -2000) || String(e.msg).includes("campaign failed")) continue;
      const { time: _t, msg, level: _l, pid: _p, hostname: _h, svc: _s, ...rest } = e;
      events.push({ at, line: `${at} ms ${s.id} ${String(msg)} ${JSON.stringify(rest).slice(0, 240)}` });
    }
  }
  return events.sort((a, b) => a.at - b.at).map((e) => e.line);
}

describe("chaos: a server cut off from etcd while clients still reach it", () => {
  let etcd: EtcdProcess;
  let proxy: TcpProxy;
  const servers: ServerProcess[] = [];
  const rpcs: RateLimiterRpc[] = [];

  beforeAll(async () => {
    ensureBuilt();
    etcd = await startEtcd();
    proxy = await startProxy(etcd.url);
    const configPath = writeConfig(CONFIG);
    const prefix = `/chaos${Date.now().toString(36)}/`;
    for (const id of ["s1", "s2", "s3"]) {
      servers.push(
        await serverProcess({
          id,
          configPath,
          etcdUrl: id === "s3" ? proxy.url : etcd.url,
          prefix,
          cli: "built",
          leaseTtlSeconds: LEASE_TTL_S,
          logLevel: "info",
          ready: "spawned",
        }),
      );
    }
    await Promise.all(servers.map((s) => s.start()));
    await waitAllReady(servers, 30_000);
    for (const s of servers)
      rpcs.push(
        connect(s.address, {
          "grpc.initial_reconnect_backoff_ms": 100,
          "grpc.max_reconnect_backoff_ms": 500,
        }),
      );
    await waitFor(
      "all three servers on one generation with three members",
      async () => {
        const views = await Promise.all(rpcs.map((r) => r.getClusterView({}, { deadlineMs: 2000 })));
        return views.every((v) => v.members.length === 3 && v.generation === views[0]!.generation);
      },
      20_000,
      100,
    );
  }, 60_000);

  afterAll(async () => {
    for (const r of rpcs) r.close();
    await Promise.all(servers.map((s) => s.stop("SIGKILL").catch(() => {})));
    await proxy?.close();
    await etcd?.destroy();
    await killAllCli();
  });

  it("admits at most limit x (1 + epsilon) per key per window, nobody crashes", async () => {
    // Four keys: two owned by s3 (the ones that move), one by s1, one by s2.
    const view = await rpcs[0]!.getClusterView({}, { deadlineMs: 2000 });
    const want: Record<string, number> = { s3: 2, s1: 1, s2: 1 };
    const keys: string[] = [];
    for (let i = 0; keys.length < 4 && i < 10_000; i++) {
      const key = `chaos/k=key-${i}`;
      const owner = ownerIn(view, key);
      if ((want[owner] ?? 0) > 0) {
        want[owner]!--;
        keys.push(key);
      }
    }
    expect(keys).toHaveLength(4);
    const owners = Object.fromEntries(keys.map((k) => [k, ownerIn(view, k)]));

    const checker = new InvariantChecker(() => ({ limit: LIMIT, windowMs: WINDOW_MS }));
    const errors = new Map<string, number>();
    const bump = (code: string) => errors.set(code, (errors.get(code) ?? 0) + 1);
    /** Admitted by key, window start and the server called: which door the excess came through. */
    const admittedVia = new Map<string, number>();
    let inFlight = 0;
    let sent = 0;
    let skipped = 0;
    let next = 0;
    const t0 = Date.now();
    const pending = new Set<Promise<void>>();

    const call = (key: string) => {
      const via = next++ % rpcs.length;
      inFlight++;
      sent++;
      const sentAt = Date.now();
      const p = rpcs[via]!.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 1000 }).then(
        (r) => {
          const res = r.results[0]!;
          if (res.error) bump(errorName(res.error.code));
          // Recorded in the window the server decided it in (its reset says which), not the one
          // the answer arrived in: on a loaded machine answers arrive late.
          const at = decidedAt(sentAt, Date.now(), res.resetMs ?? 0, WINDOW_MS);
          const allowed = res.allowed === true && !res.error;
          checker.record({ key, at, cost: 1, allowed });
          if (allowed) {
            const id = `${key} ${at - (at % WINDOW_MS) - t0} s${via + 1}`;
            admittedVia.set(id, (admittedVia.get(id) ?? 0) + 1);
          }
        },
        (err: { code?: number; message?: string }) => {
          bump(`grpc:${err.code ?? "?"}`);
          checker.record({ key, at: Date.now(), cost: 1, allowed: false });
        },
      );
      const tracked = p.finally(() => {
        inFlight--;
        pending.delete(tracked);
      });
      pending.add(tracked);
    };

    let cut = false;
    let restored = false;
    for (let tick = 0; tick * TICK_MS < LOAD_MS; tick++) {
      const elapsed = Date.now() - t0;
      if (!cut && elapsed >= CUT_AT_MS) {
        cut = true;
        proxy.cut();
        console.log(`[chaos] cut s3 from etcd at ${elapsed} ms`);
      }
      if (cut && !restored && elapsed >= CUT_AT_MS + CUT_FOR_MS) {
        restored = true;
        proxy.restore();
        console.log(`[chaos] restored s3's etcd link at ${elapsed} ms`);
      }
      for (const key of keys) {
        if (inFlight >= MAX_IN_FLIGHT) skipped++;
        else call(key);
      }
      // Paced on the start time so a slow tick does not stretch the run.
      const wait = t0 + (tick + 1) * TICK_MS - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (Date.now() - t0 > LOAD_MS + 2000) break;
    }
    if (!restored) proxy.restore();
    await Promise.all(pending);

    const after = await rpcs[0]!.getClusterView({}, { deadlineMs: 2000 }).catch(() => undefined);
    const maxByKey = checker.maxRatioByKey();
    console.log(
      `[chaos] sent ${sent} calls in ${Date.now() - t0} ms (skipped ${skipped} at the in-flight cap)`,
    );
    for (const key of keys)
      console.log(
        `[chaos] ${key} (owner before: ${owners[key]}, after: ${after ? ownerIn(after, key) : "?"}) maxRatio ${maxByKey[key]?.toFixed(3)}`,
      );
    console.log(`[chaos] errors by code: ${JSON.stringify(Object.fromEntries(errors))}`);
    const violations = checker.check(EPSILON);
    for (const v of violations)
      console.log(
        `[chaos] violation ${v.key} window starting at ${v.windowStart - t0} ms: ${v.admitted} admitted > ${v.bound} (by server called: ${[
          1, 2, 3,
        ]
          .map((n) => `s${n} ${admittedVia.get(`${v.key} ${v.windowStart - t0} s${n}`) ?? 0}`)
          .join(", ")})`,
      );

    // No process crashed: each still runs (or exited 0).
    for (const s of servers) {
      const c = s.child!.child;
      const alive = c.exitCode === null && c.signalCode === null;
      console.log(`[chaos] ${s.id}: ${alive ? "alive" : `exited code=${c.exitCode} signal=${c.signalCode}`}`);
      expect(alive || c.exitCode === 0).toBe(true);
    }
    // Load saturated every key (so the bound was tested), and the bound held.
    for (const key of keys) expect(maxByKey[key]).toBeGreaterThanOrEqual(0.9);
    expect(checker.duplicates()).toEqual([]);
    // What the servers did around it (their cluster events, not the per-call lines), for a
    // failure seen only in CI (CHAOS_EVENTS=1: printed on a pass too).
    if (violations.length > 0 || process.env.CHAOS_EVENTS)
      for (const line of clusterEvents(servers, t0)) console.log(`[chaos] ${line}`);
    expect(violations).toEqual([]);
  }, 45_000);
});
