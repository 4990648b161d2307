import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { runGlobalLoopback, scenarioQRegions } from "../../src/testkit/global-loopback.js";

/**
 * A global limit over loopback with real processes: a standalone global tier and three regions
 * (one standalone `shardlimit serve --global-tier --region` each, through a TCP proxy 50 ms each
 * way), gateways in this process. 1000/s offered 2000/s in 70/20/10; region A cut off for 6 s.
 */
describe("global limit across regions, real processes", () => {
  beforeAll(() => ensureBuilt());
  afterAll(() => killAllCli());

  it("holds the global limit, a cut-off region keeps its last share, light callers are served", async () => {
    const r = await runGlobalLoopback({
      limit: 1000,
      regions: scenarioQRegions(),
      delayMs: 50,
      steadyS: 12,
      cutS: 6,
      afterS: 4,
      cutRegion: 0,
      cli: "built",
    });
    const figures = JSON.stringify(r);
    expect(r.globalRatio, figures).toBeGreaterThanOrEqual(0.97);
    expect(r.globalRatio, figures).toBeLessThanOrEqual(1.03);
    expect(r.modeInCut, figures).toBe("last_share");
    expect(r.cutOverLastShare, figures).toBeGreaterThanOrEqual(0.95);
    expect(r.cutOverLastShare, figures).toBeLessThanOrEqual(1.03);
    for (const x of r.lightShare) expect(x, figures).toBeGreaterThanOrEqual(0.99);
  }, 60_000);
});
