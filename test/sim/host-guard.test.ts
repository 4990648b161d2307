import { describe, expect, it } from "vitest";
import { hostGuardScenarios, simulateHostGuard } from "../../src/sim/host-guard.js";

// Scenario P (host guard) on the simulated cluster and virtual clock.
describe("scenario P: host guard (deterministic simulation)", () => {
  for (const s of hostGuardScenarios(true, 1)) {
    it(s.name, () => {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
      const d = r.detail as Record<string, number | number[]>;
      const during = d.admitted_share_12_30s_low_normal_high_critical as number[];
      expect(during[0]).toBeLessThanOrEqual(0.05);
      expect(during[1]).toBeLessThan(during[2]!);
      expect(during[3]).toBeGreaterThanOrEqual(0.999);
      expect(d.recovery_s).toBeLessThanOrEqual(5);
      expect(d.network_calls_while_deciding).toBe(0);
      // The gateway did report to its owners all along: the network was there, not on the path.
      expect(d.network_calls_in_all).toBeGreaterThan(100);
    });
  }

  it("sheds nothing on a host that is never past its threshold", () => {
    const r = simulateHostGuard({ seed: 2, offered: () => 700, seconds: 20 });
    expect(Math.max(...r.level)).toBe(0);
    const offered = r.offered.flat().reduce((a, b) => a + b, 0);
    expect(r.admitted.flat().reduce((a, b) => a + b, 0)).toBe(offered);
  });
});
