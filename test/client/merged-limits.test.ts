import { describe, expect, it } from "vitest";
import { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { FakeTransport } from "../../src/testkit/fake-transport.js";

/**
 * A server run with --merge-domains hands gateways a domain split across files; they must compile
 * it merged too (GetLimits' merge_domains), or they refuse the limits and never get ready.
 */

const SOURCES = [
  {
    file: "a.yaml",
    text: "domain: api\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1 }\n",
  },
  {
    file: "b.yaml",
    text: "domain: api\ndescriptors:\n  - key: b\n    rate_limit: { unit: second, requests_per_unit: 1 }\n",
  },
];

describe("GatewayLimiter: limits merged across files", () => {
  it("compiles the server's merged sources merged, and gets ready", () => {
    const clock = new ManualClock(600_000);
    const t = new FakeTransport(clock, compileSources(SOURCES, { mergeDomains: true }), ["a:1"]);
    const limiter = new GatewayLimiter({
      servers: ["a:1"],
      clientId: "gw",
      transport: t,
      clock,
      random: () => 0.5,
    });
    limiter.start();
    clock.runUntil(clock.now() + 50);
    expect(t.limitsCalls).toBeGreaterThan(0);
    expect(limiter.ready).toBe(true);
    limiter.close();
  });
});
