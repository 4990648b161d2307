import { describe, expect, it } from "vitest";
import { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { seededRandom } from "../../src/core/random.js";
import { CuttableLink } from "../../src/sim/global.js";
import { SimNetwork } from "../../src/sim/network.js";
import { SimCluster } from "../../src/sim/sim-cluster.js";
import { FixedShare } from "../server/fixed-share.js";

/**
 * A gateway that loses its region's owner of a global key falls back to its part of the region's
 * share (the limit the owner said it divides), not of the whole global limit.
 */

const YAML = `domain: api
descriptors:
  - key: orders
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000, global: true }
`;

describe("fallback of a global key in a region", () => {
  it("a gateway cut off from its owner admits about the region's share (100/s), not 1000/s", () => {
    const clock = new ManualClock(600_000);
    const random = seededRandom(3);
    const region = new SimCluster(
      clock,
      compileSources([{ file: "g.yaml", text: YAML }]),
      1,
      3000,
      () => new FixedShare(100),
    );
    const link = new CuttableLink(
      clock,
      new SimNetwork(clock, region, { delayMs: 0.25, jitterMs: 0, loss: 0, random }),
    );
    const gw = new GatewayLimiter({
      servers: [region.servers[0]!.member.address],
      clientId: "gw",
      transport: link,
      clock,
      random,
    });
    gw.start();
    /** `ms` of 500 requests/s; the number admitted. */
    const offer = (ms: number) => {
      let admitted = 0;
      for (let t = 0; t < ms; t += 2) {
        clock.advance(2);
        if (gw.decide("api/orders=o")) admitted++;
      }
      return admitted;
    };
    offer(3000);
    expect(offer(2000)).toBeLessThan(230); // connected: the share, 100/s
    link.cut = true;
    offer(1000); // the owner fails; the key falls back
    expect(gw.stats().fallbackKeys).toBe(1);
    const cut = offer(5000);
    // Its fallback share: the region's 100/s (one gateway), not the configured 1000/s (all 2500 offered).
    expect(cut).toBeGreaterThan(400);
    expect(cut).toBeLessThan(650);
    gw.close();
  });
});
