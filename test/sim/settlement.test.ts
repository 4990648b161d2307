import { describe, expect, it } from "vitest";
import { settlementScenarios, simulateSettlement } from "../../src/sim/settlement.js";

// Scenario K (exact settlement) on the simulated cluster: the real server and gateway code.
describe("scenario K: exact settlement (deterministic simulation, quick)", () => {
  for (const s of settlementScenarios(true, 1)) {
    it(s.name, () => {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
      // Charging only the estimates admits about a quarter of the limit in actual tokens.
      expect(r.detail!.without_settlement_ratio).toBeGreaterThan(0.18);
      expect(r.detail!.without_settlement_ratio).toBeLessThan(0.27);
    });
  }

  it("holds on another seed too", () => {
    for (const mode of ["sync", "batched"] as const) {
      const r = simulateSettlement({ mode, settle: true, seconds: 300, from: 90, seed: 2 });
      expect(r.ratio, mode).toBeGreaterThanOrEqual(0.97);
      expect(r.ratio, mode).toBeLessThanOrEqual(1.02);
    }
  });
});
