import client from "prom-client";
import { describe, expect, it } from "vitest";
import { FastHistogram } from "../../src/server/fast-histogram.js";

/** The request-duration histogram exposes what prom-client's own histogram would, for the same calls. */
describe("FastHistogram", () => {
  it("renders the same /metrics text as a prom-client Histogram given the same observations", async () => {
    const buckets = [0.001, 0.01, 0.1];
    const mine = new client.Registry();
    const theirs = new client.Registry();
    const fast = new FastHistogram("t_seconds", "help text", ["method", "code"], buckets, mine);
    const slow = new client.Histogram({
      name: "t_seconds",
      help: "help text",
      labelNames: ["method", "code"],
      buckets,
      registers: [theirs],
    });
    const calls: [string, string, number][] = [
      ["Check", "OK", 0.0005],
      ["Check", "OK", 0.001], // on a bound: counts in that bucket
      ["Check", "OK", 5],
      ["Check", "INVALID_ARGUMENT", 0.02],
      ["ShouldRateLimit", "OK", 0.05],
    ];
    for (const [method, code, v] of calls) {
      fast.child(method, code).observe(v);
      slow.observe({ method, code }, v);
    }
    expect(await mine.metrics()).toBe(await theirs.metrics());
    mine.resetMetrics();
    expect(await mine.metrics()).toContain('t_seconds_count{method="Check",code="OK"} 0');
  });
});
