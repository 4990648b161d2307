import { describe, expect, it } from "vitest";
import { ensureBuilt } from "../../src/testkit/cli.js";

/**
 * Load threads on a real standalone server (load threads are worker threads that load the built
 * modules, so these run against dist/).
 */
describe("runLoad", () => {
  it("runs load threads against a server; runs pool into one", { timeout: 60_000 }, async () => {
    ensureBuilt();
    const { serverProcess, writeConfig } = await import("../../dist/testkit/serve.js");
    const { BENCH_LIMITS } = await import("../../dist/loadtest/stack.js");
    const { runLoad, startLoad, poolLoads } = await import("../../dist/loadtest/load.js");
    const server = await serverProcess({ id: "s1", configPath: writeConfig(BENCH_LIMITS) });
    await server.start();
    try {
      const decisions = async () => {
        const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
        return Number(/^shardlimit_decisions_total\{api="check"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
      };
      const spec = { kind: "check-h2" as const, servers: [server.address], route: false };
      const first = await runLoad({
        threads: 2,
        ratePerSec: 200,
        seconds: 0.5,
        keys: 300,
        warmupSeconds: 0.1,
        specFor: () => spec,
      });
      expect(first.errors).toBe(0);
      // 100 measured, 20 warming up (10 per thread); the open loop sends what is due, no more.
      expect(first.completed).toBe(100);
      expect(await decisions()).toBe(120);
      // Threads kept between runs: each run is measured on its own, with no warm-up again.
      const threads = await startLoad({
        threads: 1,
        ratePerSec: 100,
        seconds: 0.3,
        keys: 300,
        warmupSeconds: 0,
        specFor: () => spec,
      });
      let started = 0;
      const second = await threads.run({ onStart: () => started++ });
      const third = await threads.run({ onStart: () => started++ });
      await threads.close();
      expect(started).toBe(2);
      expect([second.completed, third.completed]).toEqual([30, 30]);
      expect(await decisions()).toBe(180);
      // Pooled: counts add up, the histograms merge.
      const pooled = poolLoads([first, second]);
      expect(pooled.completed).toBe(first.completed + second.completed);
      expect(pooled.latency.count).toBe(first.latency.count + second.latency.count);
      expect(pooled.wallSeconds).toBeCloseTo(first.wallSeconds + second.wallSeconds, 6);
      expect(pooled.latency.maxUs).toBe(Math.max(first.latency.maxUs, second.latency.maxUs));
    } finally {
      await server.stop();
    }
  });
});
