import { status as GrpcStatus } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { CheckItemMsg, ReportEntryMsg } from "../../src/protocol/messages.js";
import { API_CONFIG as CONFIG } from "./api-config.js";
import { callError, peek, pick, T0, type TestServer, useTestServer } from "./harness.js";

/** shardlimit's own API (`shardlimit.v1.RateLimiter`) over a real gRPC connection. */

const ALLOW = 1;
const REJECT_UNTIL = 2;

function entry(key: string, admitted: number, more: Partial<ReportEntryMsg> = {}): Partial<ReportEntryMsg> {
  return { key, admitted, ...more };
}

describe("RateLimiter over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  let seq = 0;

  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  const remaining = (key: string) => peek(t, key, clock.now())?.remaining;

  describe("Check", () => {
    it("admits one key, counting down, with the limit, the rule and the time to reset", async () => {
      clock.set(T0 + 15_000);
      const res = await t.rpc.check({ items: [{ key: "api/fw=a", cost: 3 }] });
      expect(res.generation).toBe(0);
      expect(res.results).toHaveLength(1);
      const r = res.results[0]!;
      expect(r).toMatchObject({ allowed: true, shadowed: false, remaining: 7, limit: 10, resetMs: 45_000 });
      expect(r.rule).toMatch(/^api\/fw/);
      expect(r.error ?? null).toBeNull();
      expect(remaining("api/fw=a")).toBe(7);
    });

    it("cost 0 means 1", async () => {
      clock.set(T0);
      const res = await t.rpc.check({ items: [{ key: "api/fw=zero", cost: 0 }] });
      expect(res.results[0]).toMatchObject({ allowed: true, remaining: 9 });
      // An item without a cost on the wire reads as 0.
      const omitted = await t.rpc.check({ items: [{ key: "api/fw=zero" } as CheckItemMsg] });
      expect(omitted.results[0]).toMatchObject({ allowed: true, remaining: 8 });
    });

    it("answers many keys in order, each on its own; keys no limit applies to are allowed", async () => {
      clock.set(T0);
      const res = await t.rpc.check({
        items: [
          { key: "api/fw=b", cost: 3 },
          { key: "api/tb=b", cost: 4 },
          { key: "api/nope=b", cost: 100 },
          { key: "api/sw=b", cost: 11 },
          { key: "api/free=b", cost: 1e6 },
          { key: "api/sw=b2", cost: 2 },
        ],
      });
      expect(res.results.map((r) => r.allowed)).toEqual([true, true, true, false, true, true]);
      expect(res.results[0]).toMatchObject({ remaining: 7, limit: 10 });
      expect(res.results[1]).toMatchObject({ remaining: 6, limit: 10 });
      expect(res.results[2]!.rule ?? "").toBe("");
      expect(res.results[3]).toMatchObject({ remaining: 10, retryMs: 0 });
      expect(res.results[4]).toMatchObject({ limit: 0 });
      expect(res.results[5]).toMatchObject({ remaining: 8 });
    });

    it("retry_ms: when the same cost could pass (window end, refill), 0 when never", async () => {
      clock.set(T0 + 15_000);
      expect((await t.rpc.check({ items: [{ key: "api/fw=c", cost: 10 }] })).results[0]).toMatchObject({
        allowed: true,
        remaining: 0,
        retryMs: 0,
      });
      const fw = await t.rpc.check({ items: [{ key: "api/fw=c", cost: 1 }] });
      expect(fw.results[0]).toMatchObject({ allowed: false, remaining: 0, retryMs: 45_000, resetMs: 45_000 });

      await t.rpc.check({ items: [{ key: "api/tb=c", cost: 10 }] });
      const tb = await t.rpc.check({ items: [{ key: "api/tb=c", cost: 3 }] });
      // 10 per second: 3 tokens take 300 ms.
      expect(tb.results[0]).toMatchObject({ allowed: false, retryMs: 300 });
      clock.advance(300);
      expect((await t.rpc.check({ items: [{ key: "api/tb=c", cost: 3 }] })).results[0]!.allowed).toBe(true);

      const never = await t.rpc.check({ items: [{ key: "api/fw=c2", cost: 11 }] });
      expect(never.results[0]).toMatchObject({ allowed: false, retryMs: 0, remaining: 10 });
    });

    it("atomic: a group's and its tenant's limits are admitted together or not at all", async () => {
      clock.set(T0);
      const both = [
        { key: "api/group=g1", cost: 2 },
        { key: "api/group=g1/tenant=t1", cost: 2 },
      ];
      const first = await t.rpc.check({ items: both, atomic: true });
      expect(first.results.map((r) => [r.allowed, r.remaining])).toEqual([
        [true, 3],
        [true, 1],
      ]);
      const second = await t.rpc.check({ items: both, atomic: true });
      expect(second.results.map((r) => r.allowed)).toEqual([false, false]);
      expect(remaining("api/group=g1")).toBe(3);
      expect(remaining("api/group=g1/tenant=t1")).toBe(1);
      // Not atomic: the group's item passes on its own.
      const loose = await t.rpc.check({ items: both, atomic: false });
      expect(loose.results.map((r) => r.allowed)).toEqual([true, false]);
      expect(remaining("api/group=g1")).toBe(1);
    });

    it("atomic: an item that fails validation fails the whole check, and nothing is consumed", async () => {
      clock.set(T0);
      const res = await t.rpc.check({
        items: [
          { key: "api/fw=e", cost: 1 },
          { key: "api/group=g2", cost: 1 },
          { key: "api/fw=e", cost: -1 },
        ],
        atomic: true,
      });
      expect(res.results.map((r) => r.allowed ?? false)).toEqual([false, false, false]);
      expect(res.results[2]!.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
      expect(res.results[0]!.error ?? null).toBeNull();
      expect(remaining("api/fw=e")).toBe(10);
      expect(remaining("api/group=g2")).toBe(5);

      const badKey = await t.rpc.check({
        items: [
          { key: "api/fw=e", cost: 1 },
          { key: "not a key", cost: 1 },
        ],
        atomic: true,
      });
      expect(badKey.results[0]!.allowed).toBe(false);
      expect(badKey.results[1]!.error?.code).toBe(ErrorCode.INVALID_KEY);
      expect(remaining("api/fw=e")).toBe(10);
    });

    it("atomic: keys no limit applies to and unlimited keys do not fail the check", async () => {
      clock.set(T0);
      const res = await t.rpc.check({
        items: [
          { key: "api/fw=f", cost: 2 },
          { key: "api/nope=f", cost: 1 },
          { key: "api/free=f", cost: 1 },
        ],
        atomic: true,
      });
      expect(res.results.map((r) => r.allowed)).toEqual([true, true, true]);
      expect(res.results[0]).toMatchObject({ remaining: 8 });
      expect(remaining("api/fw=f")).toBe(8);
      // When the atomic check is rejected, every item in it is, the unlimited ones included.
      const rejected = await t.rpc.check({
        items: [
          { key: "api/fw=f", cost: 9 },
          { key: "api/nope=f", cost: 1 },
        ],
        atomic: true,
      });
      expect(rejected.results.map((r) => r.allowed ?? false)).toEqual([false, false]);
      expect(remaining("api/fw=f")).toBe(8);
    });

    it("per-item errors do not fail the batch", async () => {
      clock.set(T0);
      const res = await t.rpc.check({
        items: [
          { key: "api/fw=h", cost: 1 },
          { key: "", cost: 1 },
          { key: "api/fw=h", cost: Number.NaN },
          { key: "api/conc=h", cost: 1 },
          { key: "api/fw=h", cost: 2 },
        ],
      });
      expect(res.results.map((r) => r.error?.code ?? 0)).toEqual([
        0,
        ErrorCode.INVALID_KEY,
        ErrorCode.INVALID_AMOUNT,
        ErrorCode.WRONG_ALGORITHM,
        0,
      ]);
      expect(res.results[0]).toMatchObject({ allowed: true, remaining: 9 });
      expect(res.results[4]).toMatchObject({ allowed: true, remaining: 7 });
      expect(res.results[3]!.error?.message).toMatch(/concurrency limit: use Acquire and Release/);
    });

    it("shadow mode: allowed when over, marked shadowed", async () => {
      clock.set(T0);
      const a = await t.rpc.check({ items: [{ key: "api/shadow=s", cost: 1 }] });
      expect(a.results[0]).toMatchObject({ allowed: true, shadowed: false, remaining: 0 });
      const b = await t.rpc.check({ items: [{ key: "api/shadow=s", cost: 1 }] });
      expect(b.results[0]).toMatchObject({ allowed: true, shadowed: true, remaining: 0 });
    });

    it("an empty check is INVALID_ARGUMENT", async () => {
      const err = await callError(t.rpc.check({ items: [] }));
      expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
      expect(err.details).toMatch(/no items/);
    });
  });

  describe("ReportAndGetPolicy", () => {
    const report = (entries: Partial<ReportEntryMsg>[], more: { clientId?: string; seq?: number } = {}) =>
      t.rpc.reportAndGetPolicy({
        clientId: more.clientId ?? "gw-1",
        seq: more.seq ?? ++seq,
        intervalMs: 100,
        entries: entries as ReportEntryMsg[],
      });

    it("issues key handles that stand for the key string, refused after the epoch changes", async () => {
      clock.set(T0 + 400_000);
      const first = await t.rpc.reportAndGetPolicy({
        clientId: "gw-h",
        seq: 1,
        intervalMs: 100,
        entries: [entry("api/fw=h", 2) as ReportEntryMsg, entry("api/none=x", 1) as ReportEntryMsg],
      });
      const handle = first.policies[0]!.keyHandle!;
      expect(handle).toBeGreaterThan(0);
      expect(first.policies[1]!.keyHandle).toBeGreaterThan(0);
      expect(first.keyEpoch).toBeGreaterThan(0);
      const byHandle = await t.rpc.reportAndGetPolicy({
        clientId: "gw-h",
        seq: 2,
        intervalMs: 100,
        keyEpoch: first.keyEpoch,
        entries: [{ keyHandle: handle, admitted: 3 } as ReportEntryMsg],
      });
      expect(byHandle.policies[0]!.error).toBeFalsy();
      expect(byHandle.policies[0]!.keyHandle).toBeFalsy(); // only answered for string keys
      expect(remaining("api/fw=h")).toBe(5);
      const stale = await t.rpc.reportAndGetPolicy({
        clientId: "gw-h",
        seq: 3,
        intervalMs: 100,
        keyEpoch: first.keyEpoch + 1,
        entries: [
          { keyHandle: handle, admitted: 3 } as ReportEntryMsg,
          { keyHandle: 999_999, admitted: 1 } as ReportEntryMsg,
        ],
      });
      expect(stale.policies.map((p) => p.error?.code)).toEqual([
        ErrorCode.UNKNOWN_KEY_HANDLE,
        ErrorCode.UNKNOWN_KEY_HANDLE,
      ]);
      expect(stale.policies[0]!.error!.message).toMatch(/send the key/);
      expect(remaining("api/fw=h")).toBe(5);
      // A config reload starts a new key table: old handles are refused, never misread.
      expect(t.server.reload()).toBe(true);
      const afterReload = await t.rpc.reportAndGetPolicy({
        clientId: "gw-h",
        seq: 4,
        intervalMs: 100,
        keyEpoch: first.keyEpoch,
        entries: [{ keyHandle: handle, admitted: 1 } as ReportEntryMsg],
      });
      expect(afterReload.keyEpoch).not.toBe(first.keyEpoch);
      expect(afterReload.policies[0]!.error!.code).toBe(ErrorCode.UNKNOWN_KEY_HANDLE);
    });

    it("answers a policy per entry, in order; unknown keys get ALLOW with no limit", async () => {
      clock.set(T0);
      const res = await report([
        entry("api/fw=r1", 2),
        entry("api/nope=r1", 50),
        entry("api/tb=r1", 1),
        entry("api/fw=r1b", 10),
      ]);
      expect(res.generation).toBe(0);
      expect(res.duplicate).toBe(false);
      expect(res.policies).toHaveLength(4);
      const [fw, nope, tb, full] = res.policies;
      expect(fw).toMatchObject({ limit: 10, remaining: 8, resetMs: 60_000 });
      expect(fw!.kind).toBeGreaterThanOrEqual(1);
      expect(fw!.validMs).toBeGreaterThan(0);
      expect(nope).toMatchObject({ kind: ALLOW, limit: 0 });
      expect(nope!.validMs).toBeGreaterThan(0);
      expect(tb).toMatchObject({ limit: 10, remaining: 9 });
      // A window used up: rejected (until the window ends, or until asked again sooner).
      expect(pick(full!, "kind", "remaining", "resetMs")).toEqual({
        kind: REJECT_UNTIL,
        remaining: 0,
        resetMs: 60_000,
      });
      expect(full!.validMs).toBeGreaterThan(0);
      expect(full!.validMs).toBeLessThanOrEqual(60_000);
      expect(remaining("api/fw=r1")).toBe(8);
    });

    it("a retried report (same client_id and seq) is applied once and answers duplicate", async () => {
      clock.set(T0);
      const s = ++seq;
      const first = await report([entry("api/fw=r2", 3)], { seq: s });
      expect(first.duplicate).toBe(false);
      expect(first.policies[0]).toMatchObject({ remaining: 7 });
      const again = await report([entry("api/fw=r2", 3)], { seq: s });
      expect(again.duplicate).toBe(true);
      expect(again.policies[0]).toMatchObject({ remaining: 7, limit: 10 });
      expect(remaining("api/fw=r2")).toBe(7);
      // The same seq from another client is its own report.
      const other = await report([entry("api/fw=r2", 1)], { seq: s, clientId: "gw-2" });
      expect(other.duplicate).toBe(false);
      expect(remaining("api/fw=r2")).toBe(6);
      // The next seq is applied.
      seq = s + 1;
      const next = await report([entry("api/fw=r2", 1)], { seq });
      expect(next.duplicate).toBe(false);
      expect(remaining("api/fw=r2")).toBe(5);
    });

    it("a report older than the dedup window answers too_old, applies nothing, and says so", async () => {
      clock.set(T0);
      const id = "gw-too-old";
      const high = await report([entry("api/fw=r9", 1)], { seq: 1000, clientId: id });
      expect(high.duplicate).toBe(false);
      expect(high.tooOld ?? false).toBe(false);
      // 900 is behind 1000 by more than the window: it cannot be told from one applied before.
      const old = await report([entry("api/fw=r9", 4)], { seq: 900, clientId: id });
      expect(old.duplicate).toBe(true);
      expect(old.tooOld).toBe(true);
      expect(remaining("api/fw=r9")).toBe(9);
      // A plain duplicate is not too old.
      const dup = await report([entry("api/fw=r9", 1)], { seq: 1000, clientId: id });
      expect(dup.duplicate).toBe(true);
      expect(dup.tooOld ?? false).toBe(false);
    });

    it("per-item INVALID_KEY and INVALID_AMOUNT inside a good batch; the good items are applied", async () => {
      clock.set(T0);
      const res = await report([
        entry("api/fw=r3", 2),
        entry("no-entries", 1),
        entry("api/fw=r3", -1),
        entry("api/tb=r3", 1, { rejected: Number.POSITIVE_INFINITY }),
        entry("api/fw=r3", 1, { windowAdmitted: Number.NaN }),
        entry("api/tb=r3", 4),
      ]);
      expect(res.duplicate).toBe(false);
      expect(res.policies.map((p) => p.error?.code ?? 0)).toEqual([
        0,
        ErrorCode.INVALID_KEY,
        ErrorCode.INVALID_AMOUNT,
        ErrorCode.INVALID_AMOUNT,
        ErrorCode.INVALID_AMOUNT,
        0,
      ]);
      expect(res.policies[2]!.error?.message).toMatch(/admitted is negative/);
      expect(res.policies[3]!.error?.message).toMatch(/rejected/);
      expect(remaining("api/fw=r3")).toBe(8);
      expect(remaining("api/tb=r3")).toBe(6);
    });

    it("a report's counts are visible to a following Check on the same key", async () => {
      clock.set(T0);
      await report([entry("api/fw=r4", 5)]);
      const c = await t.rpc.check({ items: [{ key: "api/fw=r4", cost: 5 }] });
      expect(c.results[0]).toMatchObject({ allowed: true, remaining: 0 });
      const over = await t.rpc.check({ items: [{ key: "api/fw=r4", cost: 1 }] });
      expect(over.results[0]!.allowed).toBe(false);
      // And the other way round: the Check's units show in the next policy.
      const p = await report([entry("api/fw=r4", 0)]);
      expect(pick(p.policies[0]!, "kind", "remaining")).toEqual({ kind: REJECT_UNTIL, remaining: 0 });
    });

    it("an empty report is fine (a heartbeat)", async () => {
      const res = await report([]);
      expect(res.policies).toEqual([]);
      expect(res.generation).toBe(0);
    });
  });

  describe("Acquire and Release", () => {
    it("holds slots under lease ids up to the limit; release frees one", async () => {
      clock.set(T0);
      const acquire = (leaseId: string, key = "api/conc=c1") => t.rpc.acquire({ key, leaseId });
      const a = await acquire("L1");
      expect(a).toMatchObject({ allowed: true, remaining: 1, limit: 2, generation: 0 });
      expect(a.rule).toMatch(/^api\/conc/);
      expect(await acquire("L2")).toMatchObject({ allowed: true, remaining: 0 });
      expect(await acquire("L3")).toMatchObject({ allowed: false, remaining: 0 });
      // A retried acquire of a held lease renews it and takes nothing more.
      expect(await acquire("L2")).toMatchObject({ allowed: true, remaining: 0 });

      expect(await t.rpc.release({ key: "api/conc=c1", leaseId: "L1" })).toMatchObject({ released: true });
      expect(await t.rpc.release({ key: "api/conc=c1", leaseId: "L1" })).toMatchObject({ released: false });
      expect(await acquire("L3")).toMatchObject({ allowed: true, remaining: 0 });
      expect(await t.rpc.release({ key: "api/conc=c1", leaseId: "never" })).toMatchObject({
        released: false,
      });
      // Another key has its own slots.
      expect(await acquire("L1", "api/conc=c2")).toMatchObject({ allowed: true, remaining: 1 });
    });

    it("a lease not released is freed after its timeout", async () => {
      clock.set(T0);
      await t.rpc.acquire({ key: "api/conc=c3", leaseId: "a", amount: 2, timeoutMs: 1000 });
      expect(await t.rpc.acquire({ key: "api/conc=c3", leaseId: "b" })).toMatchObject({ allowed: false });
      clock.advance(1001);
      expect(await t.rpc.acquire({ key: "api/conc=c3", leaseId: "b" })).toMatchObject({
        allowed: true,
        remaining: 1,
      });
      expect(await t.rpc.release({ key: "api/conc=c3", leaseId: "a" })).toMatchObject({ released: false });
    });

    it("a lease timeout over the bound (an hour) is INVALID_AMOUNT naming it, and holds nothing", async () => {
      clock.set(T0);
      const key = "api/conc=long";
      const res = await t.rpc.acquire({ key, leaseId: "forever", timeoutMs: 4_000_000_000 });
      expect(res.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
      expect(res.error?.message).toBe("timeout_ms 4000000000 exceeds the maximum of 3600000");
      expect(res.allowed).toBe(false);
      expect(await t.rpc.acquire({ key, leaseId: "b", amount: 2 })).toMatchObject({ allowed: true });
      expect(await t.rpc.acquire({ key, leaseId: "ok", timeoutMs: 3_600_000 })).toMatchObject({
        allowed: false,
      });
    });

    it("Check on a concurrency key and Acquire/Release on a rate key are WRONG_ALGORITHM", async () => {
      const c = await t.rpc.check({ items: [{ key: "api/conc=w", cost: 1 }] });
      expect(c.results[0]!.error?.code).toBe(ErrorCode.WRONG_ALGORITHM);
      const a = await t.rpc.acquire({ key: "api/fw=w", leaseId: "x" });
      expect(a.error?.code).toBe(ErrorCode.WRONG_ALGORITHM);
      expect(a.error?.message).toMatch(/not a concurrency limit: use Check/);
      expect(a.allowed).toBe(false);
      const r = await t.rpc.release({ key: "api/tb=w", leaseId: "x" });
      expect(r.error?.code).toBe(ErrorCode.WRONG_ALGORITHM);
      expect(remaining("api/fw=w")).toBe(10);
    });

    it("keys no limit applies to: acquire allowed, release false", async () => {
      expect(await t.rpc.acquire({ key: "api/nope=a", leaseId: "x" })).toMatchObject({ allowed: true });
      expect(await t.rpc.release({ key: "api/nope=a", leaseId: "x" })).toMatchObject({ released: false });
    });

    it("an empty lease id is INVALID_ARGUMENT", async () => {
      const err = await callError(t.rpc.acquire({ key: "api/conc=c4", leaseId: "" }));
      expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
      expect(err.details).toMatch(/lease_id/);
      const rel = await callError(t.rpc.release({ key: "api/conc=c4", leaseId: "" }));
      expect(rel.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    });
  });

  describe("Settle", () => {
    it("a positive delta charges, a negative one refunds", async () => {
      clock.set(T0 + 10_000);
      await t.rpc.check({ items: [{ key: "api/fw=s1", cost: 4 }] });
      const up = await t.rpc.settle({ key: "api/fw=s1", delta: 2 });
      expect(up).toMatchObject({ remaining: 4, limit: 10, resetMs: 50_000, generation: 0 });
      const down = await t.rpc.settle({ key: "api/fw=s1", delta: -3 });
      expect(down).toMatchObject({ remaining: 7 });
      expect(remaining("api/fw=s1")).toBe(7);
    });

    it("a charge past the limit is debt a token bucket pays back before admitting more", async () => {
      clock.set(T0);
      await t.rpc.check({ items: [{ key: "api/tb=s2", cost: 10 }] });
      const debt = await t.rpc.settle({ key: "api/tb=s2", delta: 5 });
      expect(debt).toMatchObject({ remaining: 0 });
      const c = await t.rpc.check({ items: [{ key: "api/tb=s2", cost: 1 }] });
      // 5 owed + 1 wanted at 10 per second.
      expect(c.results[0]).toMatchObject({ allowed: false, retryMs: 600 });
    });

    it("settle on a concurrency key is WRONG_ALGORITHM; on a key without a limit, nothing", async () => {
      const w = await t.rpc.settle({ key: "api/conc=s3", delta: 1 });
      expect(w.error?.code).toBe(ErrorCode.WRONG_ALGORITHM);
      const none = await t.rpc.settle({ key: "api/nope=s3", delta: 1 });
      expect(none.error ?? null).toBeNull();
      expect(none.generation).toBe(0);
    });
  });

  describe("GetClusterView", () => {
    it("standalone: one member at this server's address, one slice from 0, generation 0", async () => {
      const v = await t.rpc.getClusterView({ knownGeneration: 0 });
      expect(v.standalone).toBe(true);
      expect(v.generation).toBe(0);
      expect(v.members).toHaveLength(1);
      expect(v.members[0]!.address).toBe(`127.0.0.1:${t.server.grpcPort}`);
      expect(v.slices.map((s) => ({ start: s.start, owner: s.owner }))).toEqual([{ start: "0", owner: 0 }]);
    });
  });
});
