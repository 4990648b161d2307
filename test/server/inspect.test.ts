import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { PriorityMsg } from "../../src/protocol/messages.js";
import type { Inspection } from "../../src/server/inspect.js";
import { callError, T0, type TestServer, useTestServer } from "./harness.js";

/**
 * "Why was this rejected": Check's explanation per item and `Inspect` (gRPC and HTTP), for keys
 * rejected over limit, by fair share, by priority shedding, and a gateway held to its share.
 */

const CONFIG = `
domain: why
descriptors:
  - key: plain
    rate_limit: { name: plain_rpm, unit: minute, requests_per_unit: 3 }
  - key: group
    rate_limit:
      name: group_rps
      unit: second
      requests_per_unit: 100
      fair_share: { by: tenant }
    descriptors:
      - key: tenant
  - key: shed
    rate_limit: { name: shed_rps, unit: second, requests_per_unit: 100, reserve: { critical: 0.2 } }
  - key: batch
    rate_limit: { name: batch_rps, unit: second, requests_per_unit: 100 }
`;

describe("why was this rejected", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  const check = (key: string, priority?: number) =>
    t.server.limiter.check({
      items: [{ key, cost: 1, ...(priority !== undefined ? { priority } : {}) }],
      atomic: false,
      generation: 0,
      explain: true,
    }).results[0]!;

  it("Check explains an item over its limit, only when asked; Inspect shows the rule, counter and reason", async () => {
    clock.set(T0);
    for (let i = 0; i < 3; i++) {
      const ok = await t.rpc.check({ items: [{ key: "why/plain=p", cost: 1 }], explain: true });
      expect(ok.results[0]!.allowed).toBe(true);
      expect(ok.results[0]!.explanation).toBe("");
    }
    clock.advance(1000);
    const over = await t.rpc.check({ items: [{ key: "why/plain=p", cost: 1 }], explain: true });
    expect(over.results[0]!.allowed).toBe(false);
    expect(over.results[0]!.explanation).toBe(
      "over limit: why/plain#plain_rpm (3 per 60 s, fixed_window) had 0 left, the request asked 1; room again in 59000 ms",
    );
    const silent = await t.rpc.check({ items: [{ key: "why/plain=p", cost: 1 }] });
    expect(silent.results[0]!.explanation).toBe("");

    const x = await t.rpc.inspect({ key: "why/plain=p" });
    expect(x.owned).toBe(true);
    expect(x.text).toContain("owner       this server (standalone at ");
    expect(x.text).toContain("rule        why/plain#plain_rpm: 3 per 60000 ms, fixed_window");
    expect(x.text).toContain("0 of 3 left, full again in 59000 ms");
    // The two rejections with the same reason are one entry, counted.
    expect(x.text).toContain(
      "  2x over limit: why/plain#plain_rpm (3 per 60 s, fixed_window) had 0 left, the request asked 1; room again in 59000 ms",
    );
    const json = JSON.parse(x.json) as Inspection;
    expect(json.counters[0]!.rejections[0]).toMatchObject({ kind: "over_limit", count: 2 });
  });

  it("ShouldRateLimit's rejections are remembered too", async () => {
    clock.set(T0 + 50_000);
    const res = await t.rpc.shouldRateLimit({
      domain: "why",
      descriptors: [{ entries: [{ key: "plain", value: "envoy" }] }],
      hitsAddend: 4,
    });
    expect(res.overallCode).toBe(2);
    const x = await t.rpc.inspect({ key: "why/plain=envoy" });
    expect(x.text).toMatch(
      / {2}over limit: why\/plain#plain_rpm \(3 per 60 s, fixed_window\) counted this hit of 4 past its limit/,
    );
  });

  it("a tenant over its fair share is paced at it, and told so; a light tenant is not rejected", () => {
    clock.set(T0 + 100_000);
    const reasons: string[] = [];
    let lightRejected = 0;
    for (let step = 0; step < 1000; step++) {
      clock.advance(5);
      const heavy = check("why/group=g/tenant=big");
      if (!heavy.allowed) reasons.push(heavy.explanation!);
      if (step % 10 === 0 && !check("why/group=g/tenant=small").allowed) lightRejected++;
    }
    expect(lightRejected).toBe(0);
    expect(reasons.length).toBeGreaterThan(100);
    expect(reasons.every((r) => r.startsWith("fair share: "))).toBe(true);
    expect(reasons.at(-1)).toMatch(
      /^fair share: tenant "big" asks [\d.]+\/s, over its share of [\d.]+\/s of why\/group#group_rps \(100 per 1 s, fixed_window\), and is paced at its share/,
    );
    const x = t.server.limiter.inspect("why/group=g/tenant=big");
    // A tenant with no limit of its own is charged to the group's counter, attributed to it.
    const group = x.counters[0]!;
    expect(group.rule.fairShareBy).toBe("tenant");
    expect(group.subject).toEqual({ id: "big", weight: 1 });
    expect(group.rejections.at(-1)!.kind).toBe("fair_share");
  });

  it("low priority traffic is shed to keep critical's reserve, and told so", async () => {
    clock.set(T0 + 200_000);
    const reasons: string[] = [];
    for (let step = 0; step < 1000; step++) {
      clock.advance(5);
      const r = check("why/shed=s", PriorityMsg.LOW);
      if (!r.allowed) reasons.push(r.explanation!);
    }
    expect(reasons.length).toBeGreaterThan(100);
    expect(reasons.every((r) => r.startsWith("priority shedding: class low"))).toBe(true);
    const x = await t.rpc.inspect({ key: "why/shed=s" });
    expect(x.text).toContain('reserve {"critical":0.2}');
    expect(x.text).toMatch(/x priority shedding: class low/);
  });

  it("a gateway held to its share in batched mode: its policy and demand, and the reason", async () => {
    clock.set(T0 + 300_000);
    let seq = 0;
    const report = (clientId: string, admitted: number, rejected: number) =>
      t.server.limiter.reportAndGetPolicy({
        clientId,
        seq: ++seq,
        generation: 0,
        intervalMs: 100,
        keyEpoch: 0,
        spanMs: 100,
        entries: [{ key: "why/batch=b", keyHandle: 0, admitted, rejected, held: 0, windowAdmitted: 0 }],
      }).policies[0]!;
    let heavyKind = 0;
    for (let i = 0; i < 30; i++) {
      clock.advance(100);
      heavyKind = report("gw-heavy", 8, 40).kind!;
      seq--; // each gateway numbers its own reports
      report("gw-light", 1, 0);
      seq++;
    }
    expect(heavyKind).toBe(3); // REJECT_FRACTION
    const x = await t.rpc.inspect({ key: "why/batch=b" });
    expect(x.text).toContain("gateways    2 reporting");
    expect(x.text).toMatch(/ {2}gw-heavy: demand [\d.]+\/s, policy REJECT_FRACTION [\d.]+% \([\d.]+ units\)/);
    expect(x.text).toMatch(
      /fair share: gateway gw-heavy asks 480\/s, over its share among 2 gateway\(s\) of why\/batch#batch_rps/,
    );
  });

  it("a bad key is refused naming what is wrong; HTTP /inspect answers the same, 400 without a key", async () => {
    const err = await callError(t.rpc.inspect({ key: "no-equals-sign" }));
    expect(err.details).toMatch(/^inspect: /);
    const ok = await fetch(`${t.httpUrl}/inspect?key=${encodeURIComponent("why/plain=p")}`);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain("rule        why/plain#plain_rpm");
    const json = await fetch(`${t.httpUrl}/inspect?format=json&key=${encodeURIComponent("why/plain=p")}`);
    expect(((await json.json()) as Inspection).counters[0]!.rule.id).toBe("why/plain#plain_rpm");
    const none = await fetch(`${t.httpUrl}/inspect`);
    expect(none.status).toBe(400);
    expect(await none.text()).toBe("inspect: missing ?key=DOMAIN/key=value\n");
    const bad = await fetch(`${t.httpUrl}/inspect?key=no-equals-sign`);
    expect(bad.status).toBe(400);
    expect(await bad.text()).toMatch(/^inspect: /);
    const unlimited = await t.rpc.inspect({ key: "why/other=x" });
    expect(unlimited.text).toContain("rule        none: no limit applies");
  });
});
