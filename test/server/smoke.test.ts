import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { type TestServer, useTestServer } from "./harness.js";

const CONFIG = `
domain: api
descriptors:
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: 3 }
`;

describe("standalone server over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(1_700_000_000_000);
  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  it("answers Check and ShouldRateLimit from one counter", async () => {
    const c = await t.rpc.check({ items: [{ key: "api/tenant=a", cost: 2 }] });
    expect(c.results[0]).toMatchObject({ allowed: true, remaining: 1, limit: 3 });
    const e = await t.rpc.shouldRateLimit({
      domain: "api",
      descriptors: [{ entries: [{ key: "tenant", value: "a" }] }],
    });
    expect(e.overallCode).toBe(1);
    expect(e.statuses[0]).toMatchObject({
      code: 1,
      limitRemaining: 0,
      currentLimit: { requestsPerUnit: 3, unit: 1 },
    });
    const e2 = await t.rpc.shouldRateLimit({
      domain: "api",
      descriptors: [{ entries: [{ key: "tenant", value: "a" }] }],
    });
    expect(e2.overallCode).toBe(2);
  });
});
