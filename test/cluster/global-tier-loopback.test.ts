import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { runGlobalLoopback, scenarioQRegions } from "../../src/testkit/global-loopback.js";

/**
 * A global limit over loopback with real processes: a standalone global tier and three regions
 * (one standalone `shardlimit serve --global-tier --region` each, through a CONNECT proxy 50 ms each
 * way), gateways in this process. 1000/s offered 2000/s in 70/20/10; region A cut off for 10 s.
 */
describe("global limit across regions, real processes", () => {
  beforeAll(() => ensureBuilt());
  afterAll(() => killAllCli());

  it("holds the global limit, a cut-off region keeps its last share, light callers are served", async () => {
    const r = await runGlobalLoopback({
      limit: 1000,
      regions: scenarioQRegions(),
      delayMs: 50,
      steadyS: 10,
      cutS: 10,
      afterS: 3,
      cutRegion: 0,
      cli: "built",
    });
    const figures = JSON.stringify(r);
    expect(r.globalRatio, figures).toBeGreaterThanOrEqual(0.97);
    expect(r.globalRatio, figures).toBeLessThanOrEqual(1.03);
    expect(r.modeInCut, figures).toBe("last_share");
    // Within its last share, give or take what its bucket holds when the cut comes (its burst is
    // one second of the share): over the ~9 s measured, at most 1 + 1/9 of the share.
    expect(r.cutOverLastShare, figures).toBeGreaterThanOrEqual(0.95);
    expect(r.cutOverLastShare, figures).toBeLessThanOrEqual(1.02 + 1 / r.cutMeasuredS);
    // Light callers are served: >= 0.99 in the simulation and in bench:global-loopback; here a
    // looser floor, as this test shares 2 vCPU with the rest of the suite (at a load average of 16
    // one run gave region C's light caller 0.94, its owner's reports late and its counter in debt).
    for (const x of r.lightShare) expect(x, figures).toBeGreaterThanOrEqual(0.9);
  }, 60_000);
});
