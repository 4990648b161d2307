import { status as GrpcStatus } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { InputLimitsSchema } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import { callError, peek, startTestServer, T0, type TestServer, useTestServer } from "./harness.js";

/** Exact settlement by ticket (Check with `ticket`, then Settle) over a real gRPC connection. */

const CONFIG = `
domain: api
descriptors:
  - key: fw
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: tok
    rate_limit: { unit: minute, requests_per_unit: 10000 }
  - key: tb
    rate_limit: { algorithm: token_bucket, unit: minute, requests_per_unit: 100 }
  - key: group
    shard_key: true
    rate_limit: { unit: minute, requests_per_unit: 50, fair_share: { by: tenant } }
    descriptors:
      - key: tenant
        rate_limit: { unit: minute, requests_per_unit: 30 }
`;

describe("Settle by ticket over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);

  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  const remaining = (key: string) => peek(t, key, clock.now())?.remaining;
  const reserve = async (key: string, cost: number, more: { ticketTimeoutMs?: number } = {}) => {
    const res = await t.rpc.check({ items: [{ key, cost, ticket: true }], ...more });
    const r = res.results[0]!;
    expect(r.allowed).toBe(true);
    return r.ticketId!;
  };

  it("Check with a ticket admits the estimate; Settle refunds the unused part", async () => {
    clock.set(T0 + 1000);
    const id = await reserve("api/fw=a", 8);
    expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(remaining("api/fw=a")).toBe(2);
    const s = await t.rpc.settle({ key: "api/fw=a", ticketId: id, actual: [3] });
    expect(s.error ?? null).toBeNull();
    expect(s).toMatchObject({ remaining: 7, limit: 10, alreadySettled: false });
    expect(remaining("api/fw=a")).toBe(7);
  });

  it("a check without the flag gets no ticket", async () => {
    const res = await t.rpc.check({ items: [{ key: "api/fw=none", cost: 1 }] });
    expect(res.results[0]!.ticketId ?? "").toBe("");
  });

  it("settling twice changes nothing the second time and answers the same", async () => {
    clock.set(T0 + 1000);
    const id = await reserve("api/fw=b", 6);
    const first = await t.rpc.settle({ key: "api/fw=b", ticketId: id, actual: [1] });
    const again = await t.rpc.settle({ key: "api/fw=b", ticketId: id, actual: [1] });
    const other = await t.rpc.settle({ key: "api/fw=b", ticketId: id, actual: [0] });
    expect(first).toMatchObject({ remaining: 9, alreadySettled: false });
    for (const r of [again, other]) {
      expect(r).toMatchObject({ remaining: 9, limit: 10, resetMs: first.resetMs, alreadySettled: true });
    }
    expect(remaining("api/fw=b")).toBe(9);
  });

  it("an actual cost above the estimate charges the extra, past the limit if need be", async () => {
    clock.set(T0 + 1000);
    const id = await reserve("api/fw=c", 5);
    const s = await t.rpc.settle({ ticketId: id, key: "", actual: [12] });
    expect(s).toMatchObject({ remaining: 0 });
    const next = await t.rpc.check({ items: [{ key: "api/fw=c", cost: 1 }] });
    expect(next.results[0]!.allowed).toBe(false);
  });

  it("cannot refund more than was reserved: a negative actual is refused and changes nothing", async () => {
    clock.set(T0 + 1000);
    await t.rpc.check({ items: [{ key: "api/fw=d", cost: 4 }] });
    const id = await reserve("api/fw=d", 2);
    expect(remaining("api/fw=d")).toBe(4);
    const neg = await t.rpc.settle({ key: "api/fw=d", ticketId: id, actual: [-5] });
    expect(neg.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
    expect(neg.error?.message).toMatch(/actual\[0\] is negative/);
    expect(remaining("api/fw=d")).toBe(4);
    // Actual 0 gives back the whole estimate and no more: the other check's 4 stay counted.
    await t.rpc.settle({ key: "api/fw=d", ticketId: id, actual: [0] });
    expect(remaining("api/fw=d")).toBe(6);
  });

  it("bad input names its field and changes nothing", async () => {
    clock.set(T0 + 1000);
    const id = await reserve("api/fw=e", 5);
    for (const [actual, field] of [
      [[Number.NaN], /actual\[0\] is not a number/],
      [[1e12], /actual\[0\] 1000000000000 exceeds/],
      [[Number.POSITIVE_INFINITY], /actual\[0\]/],
      [[], /actual is missing/],
      [[1, 2], /actual has 2 costs; the ticket covers 1/],
    ] as const) {
      const r = await t.rpc.settle({ key: "api/fw=e", ticketId: id, actual: [...actual] });
      expect(r.error?.code, String(actual)).toBe(ErrorCode.INVALID_AMOUNT);
      expect(r.error?.message).toMatch(field);
    }
    const long = await callError(t.rpc.settle({ key: "api/fw=e", ticketId: "x".repeat(65), actual: [1] }));
    expect(long.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(long.details).toMatch(/ticket_id is 65 long/);
    const timeout = await callError(
      t.rpc.check({ items: [{ key: "api/fw=e", cost: 1, ticket: true }], ticketTimeoutMs: 3_600_001 }),
    );
    expect(timeout.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(timeout.details).toMatch(/ticket_timeout_ms/);
    expect(remaining("api/fw=e")).toBe(5);
    // Still open: the good settlement goes through.
    expect(await t.rpc.settle({ key: "api/fw=e", ticketId: id, actual: [5] })).toMatchObject({
      remaining: 5,
    });
  });

  it("an unknown ticket, a forged one, or one named with another key is UNKNOWN_TICKET", async () => {
    clock.set(T0 + 1000);
    const id = await reserve("api/fw=f", 5);
    const forged = `${id.slice(0, 21)}${id.endsWith("A") ? "B" : "A"}`;
    for (const req of [
      { key: "api/fw=f", ticketId: "never-issued", actual: [1] },
      { key: "api/fw=f", ticketId: forged, actual: [1] },
      { key: "api/fw=other", ticketId: id, actual: [1] },
    ]) {
      const r = await t.rpc.settle(req);
      expect(r.error?.code, req.ticketId).toBe(ErrorCode.UNKNOWN_TICKET);
    }
    expect(remaining("api/fw=f")).toBe(5);
  });

  it("a ticket settled after its window ended adds no capacity to the new window", async () => {
    clock.set(T0 + 50_000);
    const id = await reserve("api/fw=g", 9);
    clock.set(T0 + 61_000); // the next minute
    await t.rpc.check({ items: [{ key: "api/fw=g", cost: 6 }] });
    expect(remaining("api/fw=g")).toBe(4);
    const s = await t.rpc.settle({ key: "api/fw=g", ticketId: id, actual: [0] });
    expect(s.error ?? null).toBeNull();
    expect(remaining("api/fw=g")).toBe(4);
  });

  it("an unsettled ticket is forgotten at its timeout, its estimate charged", async () => {
    clock.set(T0 + 120_000);
    const id = await reserve("api/fw=h", 7, { ticketTimeoutMs: 1000 });
    clock.advance(1000);
    const late = await t.rpc.settle({ key: "api/fw=h", ticketId: id, actual: [1] });
    expect(late.error?.code).toBe(ErrorCode.UNKNOWN_TICKET);
    expect(remaining("api/fw=h")).toBe(3);
  });

  it("an atomic check charges several limits with different costs under one ticket, settled together", async () => {
    clock.set(T0 + 180_000);
    const res = await t.rpc.check({
      atomic: true,
      items: [
        { key: "api/fw=acme", cost: 1, ticket: true },
        { key: "api/tok=acme", cost: 3000, ticket: true },
      ],
    });
    const [req, tok] = res.results;
    expect(req!.allowed && tok!.allowed).toBe(true);
    expect(req!.ticketId).toBe(tok!.ticketId);
    expect(remaining("api/tok=acme")).toBe(7000);
    const s = await t.rpc.settle({ key: "api/fw=acme", ticketId: req!.ticketId!, actual: [1, 1200] });
    expect(s.error ?? null).toBeNull();
    expect(remaining("api/fw=acme")).toBe(9);
    expect(remaining("api/tok=acme")).toBe(8800);
  });

  it("a rejected atomic check opens no ticket", async () => {
    clock.set(T0 + 180_000);
    const res = await t.rpc.check({
      atomic: true,
      items: [
        { key: "api/fw=big", cost: 1, ticket: true },
        { key: "api/tok=big", cost: 20_000, ticket: true },
      ],
    });
    expect(res.results.map((r) => r.allowed)).toEqual([false, false]);
    expect(res.results.map((r) => r.ticketId ?? "")).toEqual(["", ""]);
  });

  it("a tenant under a fair-share group: the ticket corrects both counters", async () => {
    clock.set(T0 + 240_000);
    const id = await reserve("api/group=g/tenant=t1", 20);
    expect(remaining("api/group=g/tenant=t1")).toBe(10);
    expect(remaining("api/group=g")).toBe(30);
    await t.rpc.settle({ key: "api/group=g/tenant=t1", ticketId: id, actual: [5] });
    expect(remaining("api/group=g/tenant=t1")).toBe(25);
    expect(remaining("api/group=g")).toBe(45);
  });

  it("token bucket: a refund restores tokens up to the burst", async () => {
    clock.set(T0 + 300_000);
    const id = await reserve("api/tb=a", 90);
    expect(remaining("api/tb=a")).toBe(10);
    await t.rpc.settle({ key: "api/tb=a", ticketId: id, actual: [30] });
    expect(remaining("api/tb=a")).toBe(70);
  });

  it("the old key and delta settle still works", async () => {
    clock.set(T0 + 300_000);
    await t.rpc.check({ items: [{ key: "api/fw=old", cost: 4 }] });
    expect(await t.rpc.settle({ key: "api/fw=old", delta: -3 })).toMatchObject({ remaining: 9 });
  });
});

describe("the ticket bound", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);

  beforeAll(async () => {
    t = await startTestServer(CONFIG, { clock, limits: InputLimitsSchema.parse({ maxTickets: 2 }) });
  });
  afterAll(async () => {
    await t.stop();
  });

  it("past maxTickets a check asking for a ticket is refused, charging nothing; timeouts make room", async () => {
    for (let i = 0; i < 2; i++) {
      const r = await t.rpc.check({
        items: [{ key: "api/fw=n", cost: 1, ticket: true }],
        ticketTimeoutMs: 5000,
      });
      expect(r.results[0]!.ticketId).toBeTruthy();
    }
    const full = await t.rpc.check({ items: [{ key: "api/fw=n", cost: 1, ticket: true }] });
    expect(full.results[0]!.error?.code).toBe(ErrorCode.COUNTERS_EXHAUSTED);
    expect(full.results[0]!.error?.message).toMatch(/maximum of 2 open tickets/);
    expect(peek(t, "api/fw=n", clock.now())!.remaining).toBe(8);
    // Without a ticket the same check goes through.
    const plain = await t.rpc.check({ items: [{ key: "api/fw=n", cost: 1 }] });
    expect(plain.results[0]!.allowed).toBe(true);
    clock.advance(5000);
    const later = await t.rpc.check({ items: [{ key: "api/fw=n", cost: 1, ticket: true }] });
    expect(later.results[0]!.ticketId).toBeTruthy();
  });
});
