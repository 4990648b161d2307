import { describe, expect, it } from "vitest";
import { tenancyScenarios } from "../../src/sim/tenancy.js";

// Scenarios H (fair share in a group) and I (priorities, reserve) on the simulated cluster:
// batched gateways and synchronous ShouldRateLimit, the real client and server code.
describe("multi-tenant scenarios (deterministic simulation, quick)", () => {
  for (const s of tenancyScenarios(true, 1)) {
    it(s.name, () => {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
    });
  }

  it("holds on another seed too", () => {
    for (const s of tenancyScenarios(true, 2)) {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
    }
  });
});
