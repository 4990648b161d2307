import { describe, expect, it } from "vitest";
import { createLimiter } from "../../src/client/create.js";
import { ManualClock } from "../../src/core/clock.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import { T0, type TestServer, useTestServer } from "./harness.js";

/**
 * ReportPool over gRPC (issue 14): a backend's utilisation reaches the pool's owner, which answers
 * the pool's mode and fractions; bad reports are refused with the field named; a gateway client
 * reports for its process and learns the pool's state; the pool shows in /metrics.
 */

const CONFIG = `
domain: api
pools:
  gpu: { target: 0.8, idle_below: 0.5 }
descriptors:
  - key: model
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100, pool: gpu }
`;

describe("ReportPool over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  it("answers the pool's state; over the target for a while it sheds", async () => {
    let res = await t.rpc.reportPool({ pool: "gpu", backend: "b1", utilisation: 1, capacity: 500 });
    for (let i = 0; i < 20; i++) {
      clock.advance(50);
      res = await t.rpc.reportPool({ pool: "gpu", backend: "b1", utilisation: 1, capacity: 500 });
    }
    expect(res.error).toBeFalsy();
    expect(res.mode).toBe("overloaded");
    expect(res.level).toBeLessThan(0);
    expect(res.fractions).toHaveLength(4);
    expect(res.utilisation).toBe(1);
    const metrics = await (await fetch(`${t.httpUrl}/metrics`)).text();
    expect(metrics).toContain('shardlimit_pool_mode{pool="gpu",mode="overloaded"} 1');
    expect(metrics).toContain('shardlimit_pool_backends{pool="gpu"} 1');
  });

  it("refuses a bad report with the field named", async () => {
    const res = await t.rpc.reportPool({ pool: "gpu", backend: "b1", utilisation: 2, capacity: 500 });
    expect(res.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
    expect(res.error?.message).toBe("utilisation must be within [0, 1], got 2");
    const unknown = await t.rpc.reportPool({ pool: "tpu", backend: "b1", utilisation: 0.5, capacity: 1 });
    expect(unknown.error?.code).toBe(ErrorCode.INVALID_KEY);
  });

  it("a gateway client reports for its process and gets the pool's state, or the error", async () => {
    const gw = await createLimiter({ servers: [`127.0.0.1:${t.server.grpcPort}`], clientId: "backend-7" });
    try {
      const res = await gw.reportPool("gpu", 0.9, 500);
      expect(res.mode).toBe("overloaded");
      await expect(gw.reportPool("gpu", -1, 500)).rejects.toThrow(
        "utilisation must be within [0, 1], got -1",
      );
    } finally {
      gw.close();
    }
  });
});
