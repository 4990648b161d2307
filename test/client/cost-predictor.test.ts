import { describe, expect, it } from "vitest";
import { CostPredictor } from "../../src/client/cost-predictor.js";
import { seededRandom } from "../../src/core/random.js";
import { ownerRemaining, startGateway, YAML } from "../../src/testkit/fake-transport.js";

/** A request's cost measured after serving: the gateway's prediction, `begin` and `finish`. */

const CPU = `${YAML}  - key: cpu
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 10
      burst: 20
      resource: { name: cpu_seconds, prior: 0.5, smoothing: 0.1 }
  - key: daily
    rate_limit:
      algorithm: token_bucket
      unit: day
      requests_per_unit: 100
      resource: { name: cpu_seconds, prior: 0.5, smoothing: 0.1 }
`;

describe("CostPredictor", () => {
  it("starts at the prior, averages the first costs with it as equals, then moves by `smoothing`", () => {
    const p = new CostPredictor(10, 0.1);
    expect(p.value).toBe(10);
    p.observe(2); // (10 + 2) / 2
    expect(p.value).toBe(6);
    p.observe(0); // (10 + 2 + 0) / 3
    expect(p.value).toBeCloseTo(4, 12);
    for (let i = 0; i < 100; i++) p.observe(1);
    expect(p.value).toBeCloseTo(1, 3);
    p.observe(101); // an outlier moves it by a tenth of its distance
    expect(p.value).toBeCloseTo(11, 2);
  });

  it("settles near the mean of heavy-tailed costs, far from a wrong prior", () => {
    const random = seededRandom(3);
    const p = new CostPredictor(1, 0.02);
    let sum = 0;
    let n = 0;
    for (let i = 0; i < 20_000; i++) {
      // Pareto with alpha 2.5 and scale 0.012: mean 0.02.
      const c = 0.012 / (1 - random()) ** (1 / 2.5);
      p.observe(c);
      if (i >= 10_000) {
        sum += p.value;
        n++;
      }
    }
    // The prediction averaged over the second half: the distribution's mean.
    expect(sum / n).toBeGreaterThan(0.019);
    expect(sum / n).toBeLessThan(0.021);
  });
});

describe("GatewayLimiter.begin and Ticket.finish", () => {
  it("charges the prediction, settles the measured cost and learns it for the next request", () => {
    const { t, limiter, run } = startGateway({ yaml: CPU });
    run(10);
    expect(limiter.predictedCost("api/daily=x")).toBe(0.5);
    const first = limiter.begin("api/daily=x")!;
    expect(first.estimate).toBe(0.5);
    run(200);
    expect(ownerRemaining(t, "api/daily=x")).toBe(99); // 99.5 left, in whole units;
    first.finish(2);
    expect(limiter.predictedCost("api/daily=x")).toBeCloseTo(1.25, 12);
    run(200);
    // 1.5 more than predicted charged: 2 used in all (a day's quota refills too slowly to show).
    expect(ownerRemaining(t, "api/daily=x")).toBe(98);
    const second = limiter.begin("api/daily=x")!;
    expect(second.estimate).toBeCloseTo(1.25, 12);
    second.finish(0.25);
    second.finish(100); // settled once
    run(200);
    expect(ownerRemaining(t, "api/daily=x")).toBe(97); // 97.75;
  });

  it("a priority class is its own key with its own prediction", () => {
    const { limiter, run } = startGateway({ yaml: CPU });
    run(10);
    limiter.begin("api/cpu=x", { priority: "high" })!.finish(0.1);
    expect(limiter.predictedCost("api/cpu=x", { priority: "high" })).toBeCloseTo(0.3, 12);
    expect(limiter.predictedCost("api/cpu=x")).toBe(0.5);
  });

  it("rejects once the quota's measured use is spent, however the prediction was off", () => {
    const { limiter, run } = startGateway({ yaml: CPU });
    run(10);
    let admitted = 0;
    let used = 0;
    for (let i = 0; i < 400; i++) {
      const ticket = limiter.begin("api/cpu=x");
      if (ticket !== null) {
        admitted++;
        used += 1;
        ticket.finish(1); // twice the prior
      }
      run(25);
    }
    // 10 s: the burst of 20 and 10 a second refilled; one request's overdraw at most.
    expect(used).toBeLessThanOrEqual(20 + 100 + 3);
    expect(used).toBeGreaterThanOrEqual(0.9 * 120);
    expect(admitted).toBeLessThan(400);
  });

  it("bad input names what is wrong and changes nothing", () => {
    const { limiter, run } = startGateway({ yaml: CPU });
    run(10);
    const ticket = limiter.begin("api/cpu=x")!;
    expect(() => ticket.finish(Number.NaN)).toThrow(/cost must be a finite number >= 0, got NaN/);
    expect(() => ticket.finish(-1)).toThrow(/cost must be a finite number >= 0/);
    expect(ticket.settled).toBe(false);
    expect(limiter.predictedCost("api/cpu=x")).toBe(0.5);
    expect(() => limiter.begin("api/cpu=x", { priority: "urgent" as never })).toThrow(
      /priority "urgent" is not one of/,
    );
  });

  it("a key no limit applies to, or before the limits are known, is admitted with nothing to settle", () => {
    const { limiter, run } = startGateway({ yaml: CPU });
    const early = limiter.begin("api/cpu=x")!;
    expect(early.estimate).toBe(0);
    early.finish(3);
    run(10);
    expect(limiter.begin("other/k=v")!.estimate).toBe(0);
  });
});
