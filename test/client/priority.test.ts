import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { A, entryKey, startGateway } from "../../src/testkit/fake-transport.js";

/** Batched mode with priority classes: each class of a key is counted and reported apart. */
describe("GatewayLimiter: priority classes", () => {
  it("reports each class of a key under the key with its priority entry", () => {
    const { limiter, t, run } = startGateway({ opts: {}, addresses: [A], modes: {} });
    run(50);
    limiter.decide("api/tenant=p", 1, { priority: "critical" });
    limiter.decide({
      domain: "api",
      entries: [
        { key: "tenant", value: "p" },
        { key: "priority", value: "low" },
      ],
    });
    limiter.decide("api/tenant=p");
    run(300);
    const keys = new Set(t.reports.flatMap((r) => r.req.entries.map((e) => entryKey(t, r.address, e))));
    expect(keys).toEqual(
      new Set(["api/tenant=p/priority=critical", "api/tenant=p/priority=low", "api/tenant=p"]),
    );
  });

  it("refuses a class that is not one, naming it", () => {
    const { limiter, run } = startGateway({ opts: {}, addresses: [A], modes: {} });
    run(50);
    expect(() => limiter.decide("api/tenant=p", 1, { priority: "urgent" as "low" })).toThrow(
      InvalidArgumentError,
    );
    expect(() => limiter.decide("api/tenant=p/priority=urgent")).toThrow(
      /priority "urgent" is not a priority class/,
    );
  });
});
