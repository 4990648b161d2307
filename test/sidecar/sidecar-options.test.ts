import { describe, expect, it } from "vitest";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { DEFAULT_ENVOY_OPTIONS } from "../../src/server/envoy-options.js";
import { EnvoySidecar } from "../../src/sidecar/sidecar.js";
import { startGateway } from "../../src/testkit/fake-transport.js";

/** The sidecar shapes its answers with envoyproxy/ratelimit's options as a server does. */

const NAMES = { limit: "X-RateLimit-Limit", remaining: "X-RateLimit-Remaining", reset: "X-RateLimit-Reset" };
const req = (value: string) => ({
  domain: "api",
  descriptors: [{ entries: [{ key: "minute", value }] }],
  hitsAddend: 0,
});

describe("EnvoySidecar with envoyproxy/ratelimit's options", () => {
  it("adds the response headers and answers OK in global shadow mode", async () => {
    const { limiter, run, clock } = startGateway();
    run(20);
    const sidecar = new EnvoySidecar(limiter, DEFAULT_INPUT_LIMITS, ["a:1"], clock, {
      ...DEFAULT_ENVOY_OPTIONS,
      shadowMode: true,
      responseHeaders: NAMES,
    });
    const r = await sidecar.shouldRateLimit(req("z"));
    expect(r.responseHeadersToAdd?.map((h) => h.key)).toEqual(Object.values(NAMES));
    expect(r.responseHeadersToAdd?.[0]?.value).toBe("600");
    limiter.close();
  });

  it("adds no headers with the defaults", async () => {
    const { limiter, run, clock } = startGateway();
    run(20);
    const sidecar = new EnvoySidecar(limiter, DEFAULT_INPUT_LIMITS, ["a:1"], clock);
    expect((await sidecar.shouldRateLimit(req("z"))).responseHeadersToAdd).toBeUndefined();
    limiter.close();
  });
});
