import { describe, expect, it } from "vitest";
import {
  A,
  entryKey,
  type FakeTransport,
  ownerRemaining,
  startGateway,
  YAML,
} from "../../src/testkit/fake-transport.js";

/** Batched mode: `reserve` and `settle` on the gateway, the correction carried by reports. */

const HOUR = `${YAML}  - key: hour
    rate_limit: { algorithm: token_bucket, unit: hour, requests_per_unit: 1000 }
`;

/** Every `refunded` the gateway reported for `key`, with the report's seq. */
function refunds(t: FakeTransport, key: string): { seq: number; refunded: number }[] {
  const out: { seq: number; refunded: number }[] = [];
  for (const r of t.reports) {
    for (const e of r.req.entries) {
      if (entryKey(t, r.address, e) === key && (e.refunded ?? 0) > 0) {
        out.push({ seq: r.req.seq, refunded: e.refunded! });
      }
    }
  }
  return out;
}

describe("GatewayLimiter: exact settlement in batched mode", () => {
  it("a refund travels in the key's next report and restores the owner's counter", () => {
    const { t, limiter, run } = startGateway();
    run(10);
    const ticket = limiter.reserve("api/minute=m", 100)!;
    run(200);
    expect(ownerRemaining(t, "api/minute=m")).toBe(500);
    limiter.settle(ticket, 30);
    run(150);
    expect(refunds(t, "api/minute=m").map((r) => r.refunded)).toEqual([70]);
    expect(ownerRemaining(t, "api/minute=m")).toBe(570);
  });

  it("settling twice is a no-op; settling above the estimate charges the extra", () => {
    const { t, limiter, run } = startGateway();
    run(10);
    const low = limiter.reserve("api/minute=m", 100)!;
    run(200);
    const high = limiter.reserve("api/minute=m", 10)!;
    run(200);
    limiter.settle(low, 20);
    limiter.settle(low, 0);
    limiter.settle(high, 60);
    limiter.settle(high, 60);
    run(300);
    expect(refunds(t, "api/minute=m").map((r) => r.refunded)).toEqual([80]);
    // 110 reserved, 80 given back, 50 charged on top: 80 used in all.
    expect(ownerRemaining(t, "api/minute=m")).toBe(600 - 80);
  });

  it("a key idle since its reservation, even forgotten as idle, still reports the refund", () => {
    const { t, limiter, run } = startGateway({ yaml: HOUR, opts: { idleKeyMs: 5_000 } });
    run(10);
    const ticket = limiter.reserve("api/hour=h", 400)!;
    run(200);
    const before = ownerRemaining(t, "api/hour=h");
    expect(before).toBeLessThanOrEqual(601);
    run(20_000); // nothing uses the key; the gateway forgets it after 5 s
    expect(limiter.stats().keys).toBe(0);
    limiter.settle(ticket, 100);
    run(150);
    expect(refunds(t, "api/hour=h").map((r) => r.refunded)).toEqual([300]);
    // 300 tokens back (plus the refill of the 20 s that passed).
    expect(ownerRemaining(t, "api/hour=h")).toBeGreaterThanOrEqual(before + 300);
  });

  it("a key that is being rejected still reports the refund", () => {
    const { t, limiter, run } = startGateway();
    run(10);
    const ticket = limiter.reserve("api/minute=r", 500)!;
    run(200);
    while (limiter.decide("api/minute=r", 50)) run(1);
    run(200);
    expect(limiter.decide("api/minute=r", 50)).toBe(false);
    const left = ownerRemaining(t, "api/minute=r");
    limiter.settle(ticket, 100);
    run(150);
    expect(refunds(t, "api/minute=r").map((r) => r.refunded)).toEqual([400]);
    expect(ownerRemaining(t, "api/minute=r")).toBe(left + 400);
    run(200); // the next policy hands the refund out again
    expect(limiter.decide("api/minute=r", 50)).toBe(true);
  });

  it("the correction is applied exactly once when the report carrying it is retried", () => {
    const { t, limiter, run } = startGateway();
    run(10);
    const ticket = limiter.reserve("api/minute=m", 100)!;
    run(200);
    t.modes.set(A, "lose"); // the owner applies the report; its answer is lost
    limiter.settle(ticket, 25);
    run(150);
    t.modes.set(A, "ok");
    run(1000);
    const sent = refunds(t, "api/minute=m");
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(new Set(sent.map((r) => r.seq)).size).toBe(1); // the same report, sent again
    expect(sent.every((r) => r.refunded === 75)).toBe(true);
    expect(ownerRemaining(t, "api/minute=m")).toBe(575);
  });

  it("a refund for a window that has ended since the reservation is dropped", () => {
    const { t, limiter, run, clock } = startGateway();
    run(10);
    const ticket = limiter.reserve("api/minute=w", 100)!;
    run(200);
    clock.runUntil(660_000 + 5_000); // the next minute
    limiter.decide("api/minute=w", 10);
    run(200);
    limiter.settle(ticket, 0);
    run(200);
    expect(refunds(t, "api/minute=w")).toEqual([]);
    expect(ownerRemaining(t, "api/minute=w")).toBe(590);
  });
});
