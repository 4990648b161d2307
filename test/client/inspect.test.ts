import { describe, expect, it } from "vitest";
import { A, startGateway } from "../../src/testkit/fake-transport.js";

/** `GatewayLimiter.inspect`: why this gateway admits or rejects a key now (fallback happens here). */
describe("GatewayLimiter.inspect", () => {
  it("names the owner's policy while the owner answers, and the fallback share once it is lost", () => {
    const { t, limiter, run } = startGateway({ opts: {}, addresses: [A], modes: {} });
    run(10);
    expect(limiter.inspect("api/tenant=x")?.state).toBe("allowance");
    limiter.decide("api/tenant=x");
    run(100);
    const answered = limiter.inspect("api/tenant=x")!;
    expect(answered.state).not.toBe("fallback");
    expect(answered.why).toMatch(/^the owner (allows|grants)/);

    t.modes.set(A, "fail");
    limiter.decide("api/tenant=x");
    limiter.decide("api/closed=x");
    run(100);
    const open = limiter.inspect("api/tenant=x")!;
    expect(open.state).toBe("fallback");
    expect(open.why).toMatch(
      /^fallback: the owner of \S+ \(100 per 1000 ms\) is unreachable; this gateway decides on its own share, the limit \/ 1 gateway\(s\) = 100 per window/,
    );
    const closed = limiter.inspect("api/closed=x")!;
    expect(closed.state).toBe("fallback");
    expect(closed.why).toMatch(/fail_mode closed: every request is rejected$/);
    expect(limiter.decide("api/closed=x")).toBe(false);

    t.modes.set(A, "ok");
    run(300);
    limiter.decide("api/tenant=x");
    run(300);
    expect(limiter.inspect("api/tenant=x")!.state).not.toBe("fallback");
  });

  it("says why it rejects when the owner holds it back: the policy in force, in words", () => {
    const { limiter, run } = startGateway({ opts: {}, addresses: [A], modes: {} });
    run(10);
    // 600 a minute, asked 100 times a tick: the window is spent within a second.
    let rejected = 0;
    let why = "";
    for (let tick = 0; tick < 30 && why === ""; tick++) {
      for (let i = 0; i < 100; i++) if (!limiter.decide("api/minute=m")) rejected++;
      run(100);
      const x = limiter.inspect("api/minute=m")!;
      if (x.state === "REJECT_UNTIL" || x.state === "REJECT_FRACTION") why = x.why;
    }
    expect(rejected).toBeGreaterThan(0);
    expect(why).toMatch(
      /^(over limit: the owner said \S+ \(600 per 60000 ms\) is spent|fair share: the owner holds this gateway)/,
    );
  });

  it("is undefined for a key no limit applies to", () => {
    const { limiter, run } = startGateway({ opts: {}, addresses: [A], modes: {} });
    run(10);
    expect(limiter.inspect("nodomain/x=y")).toBeUndefined();
  });
});
