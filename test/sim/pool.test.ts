import { describe, expect, it } from "vitest";
import { BackendLoad, poolScenarios } from "../../src/sim/pool.js";

// Scenarios N (a pool overloaded twice over, shed by class) and O (an idle pool lending to tenants
// over their quotas) on the simulated cluster, with backends whose load closes the loop.
describe("pool scenarios (deterministic simulation, quick)", () => {
  for (const s of poolScenarios(true, 1)) {
    it(s.name, () => {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
    });
  }

  it("holds on another seed too", () => {
    for (const s of poolScenarios(true, 2)) {
      const r = s.run();
      expect(r.pass, JSON.stringify(r)).toBe(true);
    }
  });
});

describe("BackendLoad", () => {
  const model = { backends: 2, capacityPerS: 200, reportMs: 100, windowMs: 200, delayMs: 50, tauMs: 100 };

  it("reads the work of the last window, seen late, over capacity, smoothed and clamped", () => {
    const load = new BackendLoad(model, 5);
    // 20 units per backend in [1000, 1200): 100/s against 100/s each: utilisation 1.
    for (let t = 1000; t < 1200; t += 5) load.admit(1, t);
    // Not seen yet at 1200 (50 ms late): the window is [1000, 1150).
    const alpha = 1 - Math.exp(-1);
    expect(load.read(0, 1200)).toBeCloseTo(0.75 * alpha, 6);
    const fresh = new BackendLoad(model, 5);
    for (let t = 1000; t < 1200; t += 5) fresh.admit(1, t);
    for (let t = 1000; t < 1200; t += 5) fresh.admit(1, t);
    // Twice the capacity reads as 1, as a CPU's load does.
    let u = 0;
    for (let i = 0; i < 20; i++) u = fresh.read(0, 1250);
    expect(u).toBe(1);
  });
});
