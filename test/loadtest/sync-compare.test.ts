import { describe, expect, it } from "vitest";
import { ensureBuilt } from "../../src/testkit/cli.js";

/**
 * `shardlimit bench sync-compare`, briefly: four servers (shardlimit on each transport, two
 * do-nothing servers) each answer Check in two interleaved closed-loop rounds, with h2load when
 * installed and with the Node client, with the server's and the generator's CPU per call, then in
 * an open loop; every process is stopped at the end. It runs from dist/ (the servers it starts
 * are the built CLI and a built module).
 */
describe("bench sync-compare", () => {
  for (const generator of ["node", "h2load"] as const) {
    // h2load is installed by scripts/ensure-deps.sh (Debian's nghttp2-client).
    it(`measures every system with the ${generator} generator`, async () => {
      ensureBuilt();
      const { runSyncCompare, formatSyncCompare } = await import("../../dist/loadtest/sync-compare.js");
      const r = await runSyncCompare({
        seconds: 1,
        rounds: 2,
        warmSeconds: 1,
        openSeconds: 1,
        worstSeconds: 0,
        generator,
        clients: 2,
        streams: 4,
        requests: ["Check"],
      });
      expect(r.generator).toBe(generator);
      expect(r.results.map((x: { system: string }) => x.system)).toEqual([
        "shardlimit lean",
        "shardlimit grpc-js",
        "do-nothing grpc-js",
        "do-nothing http2",
      ]);
      for (const x of r.results) {
        expect(x.rounds).toHaveLength(2);
        expect(x.maxPerSec).toBeGreaterThan(0);
        expect(x.closedErrors).toBe(0);
        // Each server used CPU for its calls, and so did the generator (h2load read through its shell).
        expect(x.serverCpuUs.median).toBeGreaterThan(0);
        expect(x.generatorCpuUs.median).toBeGreaterThan(0);
        expect(x.half!.errors).toBe(0);
        expect(x.half!.p99Ms).toBeGreaterThan(0);
      }
      for (const x of r.results.filter((y: { system: string }) => y.system.startsWith("shardlimit"))) {
        // The open loop in pairs with the do-nothing node:http2 server, in turns, once per round.
        expect(x.halfRounds).toHaveLength(2);
        expect(x.baselineRounds).toHaveLength(2);
        // It ran near the rate asked (h2load's per-connection rate, or the Node client's schedule);
        // loose: a one-second run that meets a stall of the machine stretches, and a wrong
        // per-connection rate would be 16 times off.
        expect(x.half!.achieved).toBeGreaterThan(x.half!.rate * 0.25);
      }
      expect(r.ratios.map((q) => q.system)).toEqual(["shardlimit lean", "shardlimit grpc-js"]);
      for (const q of r.ratios) {
        expect(q.rate.median).toBeGreaterThan(0);
        expect(q.cpu.median).toBeGreaterThan(0);
        expect(q.p99Rounds!.median).toBeGreaterThan(0);
      }
      expect(formatSyncCompare(r)).toContain("ratios");
    }, 60_000);
  }

  // serve --workers 2: one gRPC port per worker, each answered (etcd from PATH, as serve needs).
  it("measures shardlimit with --workers 2 over both workers' ports against the do-nothing node:http2 server", async () => {
    ensureBuilt();
    const { runSyncCompare } = await import("../../dist/loadtest/sync-compare.js");
    const r = await runSyncCompare({
      seconds: 1,
      rounds: 1,
      warmSeconds: 1,
      openSeconds: 0,
      worstSeconds: 0,
      generator: "h2load",
      clients: 2,
      streams: 4,
      requests: ["Check"],
      leanOnly: true,
      workers: [2],
    });
    expect(r.results.map((x: { system: string }) => x.system)).toEqual([
      "shardlimit lean",
      "shardlimit lean workers=2",
      "do-nothing http2",
    ]);
    const w = r.results.find((x: { system: string }) => x.system === "shardlimit lean workers=2")!;
    expect(w.maxPerSec).toBeGreaterThan(0);
    expect(w.closedErrors).toBe(0);
    // The supervisor, both workers and their private etcd: the tree used CPU.
    expect(w.serverCpuUs.median).toBeGreaterThan(0);
  }, 120_000);
});
