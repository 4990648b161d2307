import { describe, expect, it } from "vitest";
import { mergeMetrics } from "../../src/app/workers.js";

describe("mergeMetrics (serve --workers: one /metrics for all workers)", () => {
  it("keeps each family's HELP and TYPE once and labels every sample with its worker", () => {
    const w0 = [
      "# HELP a_total Things",
      "# TYPE a_total counter",
      'a_total{method="Check"} 3',
      "# HELP g A gauge",
      "# TYPE g gauge",
      "g 1",
      "",
    ].join("\n");
    const w1 = [
      "# HELP a_total Things",
      "# TYPE a_total counter",
      'a_total{method="Check"} 4',
      "# HELP g A gauge",
      "# TYPE g gauge",
      "g 2",
      "",
    ].join("\n");
    expect(mergeMetrics([w0, undefined, w1]).split("\n")).toEqual([
      "# HELP a_total Things",
      "# TYPE a_total counter",
      'a_total{worker="0",method="Check"} 3',
      'a_total{worker="2",method="Check"} 4',
      "# HELP g A gauge",
      "# TYPE g gauge",
      'g{worker="0"} 1',
      'g{worker="2"} 2',
      "",
    ]);
  });

  it("keeps histogram series under their family", () => {
    const h = [
      "# HELP d Durations",
      "# TYPE d histogram",
      'd_bucket{le="1"} 2',
      'd_bucket{le="+Inf"} 3',
      "d_sum 1.5",
      "d_count 3",
      "",
    ].join("\n");
    expect(mergeMetrics([h, h])).toBe(
      [
        "# HELP d Durations",
        "# TYPE d histogram",
        'd_bucket{worker="0",le="1"} 2',
        'd_bucket{worker="0",le="+Inf"} 3',
        'd_sum{worker="0"} 1.5',
        'd_count{worker="0"} 3',
        'd_bucket{worker="1",le="1"} 2',
        'd_bucket{worker="1",le="+Inf"} 3',
        'd_sum{worker="1"} 1.5',
        'd_count{worker="1"} 3',
        "",
      ].join("\n"),
    );
  });
});
