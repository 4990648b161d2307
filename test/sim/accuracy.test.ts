import { describe, expect, it } from "vitest";
import { runAccuracy, scenarios } from "../../src/sim/accuracy.js";
import { simulate } from "../../src/sim/simulation.js";

// The real GatewayLimiter against the real server Limiter over the in-memory network, on a virtual
// clock: exact and repeatable, and a simulated minute takes well under a second.
describe("accuracy scenarios (deterministic simulation, quick)", () => {
  for (const s of scenarios(true, 1)) {
    const letter = s.name[0]!;
    it(s.name, () => {
      const [r] = runAccuracy({ quick: true, seed: 1, only: letter });
      expect(r, JSON.stringify(r)).toBeDefined();
      expect(r!.pass, JSON.stringify(r)).toBe(true);
    });
  }

  it("holds on other seeds too (A, D and E, the sensitive ones)", () => {
    for (const seed of [2, 3]) {
      for (const letter of ["A", "D", "E"]) {
        const [r] = runAccuracy({ quick: true, seed, only: letter });
        expect(r!.pass, JSON.stringify(r)).toBe(true);
      }
    }
  });
});

describe("simulation", () => {
  const yaml = `domain: sim
descriptors:
  - key: k
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100 }
`;
  const spec = { yaml, key: "sim/k=v", servers: 2, gateways: 4, seconds: 5, rate: () => 100 };

  it("is deterministic for a seed", () => {
    const a = simulate({ ...spec, seed: 7 });
    const b = simulate({ ...spec, seed: 7 });
    expect(a.admittedSeries).toEqual(b.admittedSeries);
    expect(a.offered).toBe(b.offered);
  });

  it("loses messages when told to, and still keeps near the limit", () => {
    const r = simulate({ ...spec, seed: 3, loss: 0.05 });
    expect(r.failedReports).toBeGreaterThan(0);
    const rate = r.admitted / 5;
    expect(rate).toBeGreaterThan(90);
    expect(rate).toBeLessThan(130); // the first second holds the bucket's initial burst
  });

  it("without re-sent window totals the crash in F over-admits (what the re-send is worth)", () => {
    const f = scenarios(true, 1).find((s) => s.name.startsWith("F"))!;
    const withResend = simulate(f.spec);
    const without = simulate({ ...f.spec, client: { resendWindowTotals: false } });
    expect(withResend.admitted).toBeLessThanOrEqual(60_000 * 1.05);
    // The new owner starts the minute empty and hands out its quota a second time.
    expect(without.admitted).toBeGreaterThan(60_000 * 1.2);
  });
});
