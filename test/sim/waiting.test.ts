import { describe, expect, it } from "vitest";
import { simulateWaiting, waitingScenarios } from "../../src/sim/waiting.js";

// Scenario L: closed-loop callers waiting for quota on batched gateways (GatewayLimiter.wait),
// the real client and server code on the simulated cluster.
describe("waiting scenario (deterministic simulation, quick)", () => {
  for (const s of waitingScenarios(true, 1)) {
    it(s.name, () => {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
    });
  }

  it("holds on other seeds too, and is deterministic for a seed", () => {
    const spec = { limitPerS: 100, callers: 50, gateways: 5, timeoutMs: 500, seconds: 15, from: 5 };
    for (const seed of [2, 3]) {
      const r = simulateWaiting({ ...spec, seed });
      expect(r.ratePerS / 100, JSON.stringify(r)).toBeGreaterThanOrEqual(0.98);
      expect(r.ratePerS / 100, JSON.stringify(r)).toBeLessThanOrEqual(1.02);
      expect(r.fifoViolations).toBe(0);
      expect(r.maxTimeoutLateMs).toBeLessThanOrEqual(10);
    }
    const a = simulateWaiting({ ...spec, seed: 5 });
    const b = simulateWaiting({ ...spec, seed: 5 });
    expect({ ...a, wallMs: 0 }).toEqual({ ...b, wallMs: 0 });
  });
});
