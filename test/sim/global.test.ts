import { describe, expect, it } from "vitest";
import { globalScenarios } from "../../src/sim/global.js";

// Scenario Q: a global limit over three regional clusters and a global one, 50 ms apart, on the
// simulated network with the real client, server and GlobalTier code (quick runs).
describe("global limit across regions (deterministic simulation, quick)", () => {
  for (const seed of [1, 2]) {
    it(`Q holds on seed ${seed}`, () => {
      for (const s of globalScenarios(true, seed)) {
        const r = s.run();
        expect(r.pass, JSON.stringify(r)).toBe(true);
        expect(r.detail?.mode_in_cut).toBe("last_share");
      }
    });
  }
});
