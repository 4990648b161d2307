import { describe, expect, it } from "vitest";
import { costQuotaScenarios } from "../../src/sim/cost-quota.js";

// Scenario M (CPU quota) on the simulated cluster: the real server and gateway code.
describe("scenario M: CPU quota, costs measured after serving (deterministic simulation, quick)", () => {
  for (const s of costQuotaScenarios(true, 1)) {
    it(s.name, () => {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
      const d = r.detail as Record<string, number>;
      for (const t of ["a", "b", "c"]) {
        expect(d[`${t}_demand`], t).toBeGreaterThan(1.1);
        expect(d[`${t}_used_over_quota`], t).toBeGreaterThanOrEqual(0.97);
        expect(d[`${t}_used_over_quota`], t).toBeLessThanOrEqual(1.03);
      }
      for (const t of ["d", "e"]) {
        expect(d[`${t}_demand`], t).toBeLessThan(0.7);
        expect(d[`${t}_requests_admitted`], t).toBeGreaterThanOrEqual(0.999);
      }
      // The prior (50 ms) is forgotten: each key predicts near the mean cost (20 ms).
      for (const t of ["a", "b", "c", "d", "e"]) {
        expect(d[`${t}_predicted_cost`], t).toBeGreaterThan(0.01);
        expect(d[`${t}_predicted_cost`], t).toBeLessThan(0.04);
      }
    });
  }
});
