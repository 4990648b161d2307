import { describe, expect, it } from "vitest";
import { CpuMeter, CpuTimeline, processCpuSeconds } from "../../src/loadtest/cpu.js";
import { lineChart, renderHtml } from "../../src/loadtest/html.js";
import { newReport } from "../../src/loadtest/report.js";

describe("load-test parts", () => {
  it("CPU seconds of a process grow with work, and a gone process reads as undefined", () => {
    const meter = new CpuMeter(() => [process.pid]);
    meter.start();
    let x = 0;
    const until = performance.now() + 50;
    while (performance.now() < until) x += Math.sqrt(x + 1);
    const r = meter.stop();
    expect(r.cpuSeconds).toBeGreaterThan(0.02);
    expect(processCpuSeconds(2 ** 22 + 12345)).toBeUndefined();
    expect(x).toBeGreaterThan(0);
  });

  it("a CPU timeline gives each interval's CPU, not the total so far", () => {
    const t = new CpuTimeline(() => [process.pid, 2 ** 22 + 12345]);
    t.start();
    const busy = (ms: number) => {
      let x = 0;
      const until = performance.now() + ms;
      while (performance.now() < until) x += Math.sqrt(x + 1);
      return x;
    };
    busy(60);
    t.sample();
    t.sample();
    expect(t.perSample).toHaveLength(2);
    expect(t.perSample[0]).toBeGreaterThan(0.03);
    expect(t.perSample[1]).toBeLessThan(0.01);
  });

  it("charts are SVG paths, one per series, and the page escapes what it shows", () => {
    const svg = lineChart({
      title: "t <x>",
      xLabel: "s",
      yLabel: "v",
      series: [
        {
          name: "a",
          color: "#000",
          points: [
            [0, 1],
            [1, 2],
          ],
        },
        {
          name: "b",
          color: "#f00",
          points: [
            [0, 2],
            [1, 1],
          ],
        },
      ],
      markers: [{ x: 0.5, label: "kill" }],
    });
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).toContain("t &lt;x&gt;");
    const page = renderHtml({ ...newReport(true), timings: { a: 1 } });
    expect(page.startsWith("<!doctype html>")).toBe(true);
  });
});
