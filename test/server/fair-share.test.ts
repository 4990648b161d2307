import { status as GrpcStatus } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { PolicyKind } from "../../src/core/policy.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import { PriorityMsg, type ReportEntryMsg } from "../../src/protocol/messages.js";
import { callError, desc, peek, T0, type TestServer, useTestServer } from "./harness.js";

/**
 * A group's fair-share limit over gRPC: a tenant's request charges its own limit and the group's,
 * decided together; the answer names the limit that decided; priority entries and fields pick a
 * class and key no counter; a batched report of a tenant's key holds the gateway to both limits.
 */

const OK = 1;
const OVER_LIMIT = 2;

const CONFIG = `
domain: ai
descriptors:
  - key: group
    rate_limit:
      name: group_rpm
      unit: minute
      requests_per_unit: 10
      fair_share: { by: tenant, weights: { gold: 3 } }
    descriptors:
      - key: tenant
        rate_limit: { name: tenant_rpm, unit: minute, requests_per_unit: 4 }
      - key: tenant
        value: free
      - key: tenant
        value: soft
        rate_limit: { name: soft_rpm, unit: minute, requests_per_unit: 2, soft: true }
  - key: plain
    rate_limit: { unit: minute, requests_per_unit: 3 }
  - key: conn
    rate_limit: { unit: second, requests_per_unit: 5, algorithm: concurrency }
`;

describe("fair share and priorities over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);

  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  const remaining = (key: string) => peek(t, key, clock.now())?.remaining;

  it("a report naming a priority on a concurrency limit is answered like any report of it (not divided by class)", async () => {
    const res = await t.rpc.reportAndGetPolicy({
      clientId: "gw-conn",
      seq: 1,
      intervalMs: 100,
      entries: [{ key: "ai/conn=c1/priority=low", admitted: 1, held: 1 } as ReportEntryMsg],
    });
    expect(res.policies[0]!.error).toBeFalsy();
  });

  it("ShouldRateLimit charges the tenant's limit and the group's together; the tighter one answers", async () => {
    clock.set(T0);
    const call = () =>
      t.rpc.shouldRateLimit({ domain: "ai", descriptors: [desc("group=g1", "tenant=t1")], hitsAddend: 0 });
    for (let i = 0; i < 4; i++) expect((await call()).overallCode).toBe(OK);
    expect(remaining("ai/group=g1/tenant=t1")).toBe(0);
    expect(remaining("ai/group=g1")).toBe(6);
    const over = await call();
    expect(over.overallCode).toBe(OVER_LIMIT);
    expect(over.statuses[0]!.currentLimit!.name).toBe("tenant_rpm");
    // Refused by the tenant's limit: the group is not charged for it.
    expect(remaining("ai/group=g1")).toBe(6);
  });

  it("a tenant with no limit of its own is charged to the group only, attributed to it", async () => {
    clock.set(T0 + 60_000);
    const res = await t.rpc.shouldRateLimit({
      domain: "ai",
      descriptors: [desc("group=g2", "tenant=free")],
      hitsAddend: 3,
    });
    expect(res.overallCode).toBe(OK);
    expect(res.statuses[0]!.currentLimit!.name).toBe("group_rpm");
    expect(remaining("ai/group=g2")).toBe(7);
  });

  it("a priority entry picks the class and keys no counter; a bad one is refused naming it", async () => {
    clock.set(T0 + 120_000);
    const res = await t.rpc.shouldRateLimit({
      domain: "ai",
      descriptors: [desc("plain=p1", "priority=critical")],
      hitsAddend: 0,
    });
    expect(res.overallCode).toBe(OK);
    expect(remaining("ai/plain=p1")).toBe(2);
    const bad = await callError(
      t.rpc.shouldRateLimit({
        domain: "ai",
        descriptors: [desc("plain=p1", "priority=urgent")],
        hitsAddend: 0,
      }),
    );
    expect(bad.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/descriptor 0: priority "urgent" is not a priority class/);
    expect(remaining("ai/plain=p1")).toBe(2);
  });

  it("Check takes a priority per item; a number outside the enum is a per-item error", async () => {
    clock.set(T0 + 180_000);
    const res = await t.rpc.check({
      items: [
        { key: "ai/plain=p2", cost: 1, priority: PriorityMsg.CRITICAL },
        { key: "ai/plain=p2", cost: 1, priority: 9 },
        { key: "ai/group=g3/tenant=t1", cost: 2 },
      ],
      atomic: false,
      generation: 0,
    });
    expect(res.results[0]!.allowed).toBe(true);
    expect(res.results[1]!.error?.code).toBe(ErrorCode.INVALID_PRIORITY);
    expect(res.results[1]!.error?.message).toMatch(/priority 9/);
    expect(res.results[2]).toMatchObject({ allowed: true, rule: expect.stringContaining("tenant_rpm") });
    expect(remaining("ai/plain=p2")).toBe(2);
    expect(remaining("ai/group=g3")).toBe(8);
  });

  it("a soft tenant over its own limit borrows the group's idle capacity, charged to the group only", async () => {
    clock.set(T0 + 240_000);
    const check = () =>
      t.rpc.check({ items: [{ key: "ai/group=g4/tenant=soft", cost: 1 }], atomic: false, generation: 0 });
    for (let i = 0; i < 5; i++) expect((await check()).results[0]!.allowed).toBe(true);
    expect(remaining("ai/group=g4/tenant=soft")).toBe(0);
    expect(remaining("ai/group=g4")).toBe(5);
  });

  it("a batched report of a tenant's key charges the group too and holds the gateway to both", async () => {
    clock.set(T0 + 300_000);
    const res = await t.rpc.reportAndGetPolicy({
      clientId: "gw-fair",
      seq: 1,
      intervalMs: 100,
      entries: [{ key: "ai/group=g5/tenant=t1", admitted: 3 } as ReportEntryMsg],
    });
    expect(res.policies[0]!.error).toBeFalsy();
    expect(remaining("ai/group=g5/tenant=t1")).toBe(1);
    expect(remaining("ai/group=g5")).toBe(7);
    // The tenant's own limit (1 left) is the tighter: no ALLOW for the group's 7.
    expect(res.policies[0]!.kind).not.toBe(PolicyKind.ALLOW);
  });

  it("counts units per tenant and class, admitted, rejected and borrowed", async () => {
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    const value = (labels: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`shardlimit_tenant_units_total{${labels}}`));
      return line === undefined ? undefined : Number(line.split(" ").pop());
    };
    expect(value('domain="ai",tenant="t1",priority="normal",result="admitted"')).toBeGreaterThanOrEqual(4);
    expect(value('domain="ai",tenant="t1",priority="normal",result="rejected"')).toBeGreaterThanOrEqual(1);
    expect(value('domain="ai",tenant="soft",priority="normal",result="borrowed"')).toBe(3);
    expect(value('domain="ai",tenant="",priority="critical",result="admitted"')).toBe(2);
  });
});
