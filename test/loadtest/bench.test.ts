import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { BenchReport } from "../../src/loadtest/report.js";
import { BUILT_CLI as CLI, ensureBuilt, REPO_ROOT as REPO } from "../../src/testkit/cli.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/**
 * `shardlimit bench --quick`: every scenario, small, on real etcd, server and redis-server
 * processes over loopback; then its HTML report rendered to PNG in headless Chromium.
 */
describe("shardlimit bench --quick", () => {
  const dir = tempDir("shardlimit-bench-test-");
  const json = path.join(dir, "bench.json");
  const html = path.join(dir, "bench.html");
  let report: BenchReport;
  let wallS = 0;

  it("runs every scenario and writes the report", { timeout: 240_000 }, () => {
    ensureBuilt();
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [CLI, "bench", "--quick", "--json", json, "--html", html], {
      cwd: REPO,
      encoding: "utf8",
      timeout: 230_000,
    });
    wallS = (Date.now() - t0) / 1000;
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    console.log(
      `shardlimit bench --quick: ${wallS.toFixed(1)} s (${readFileSync(json, "utf8").length} bytes of JSON)`,
    );
    report = JSON.parse(readFileSync(json, "utf8")) as BenchReport;
    expect(Object.keys(report.timings).sort()).toEqual([
      "accuracy",
      "baseline",
      "failover",
      "scale",
      "sync",
      "throughput",
    ]);
  });

  it("scale: after a server joins (it must own slices before the step runs), twice the load is decided", () => {
    const [one, two] = report.scale!;
    expect(one!.servers).toBe(1);
    expect(two!.servers).toBe(2);
    expect(two!.scaling).toBeGreaterThan(0.9);
    expect(two!.decisions_per_s).toBeGreaterThan(1.8 * one!.decisions_per_s);
  });

  it("sync: Check and ShouldRateLimit answer every call at each rate, with the knee named per API", () => {
    const { rows, knee } = report.sync!;
    expect(rows.map((r) => `${r.api} ${r.target_per_s}`)).toEqual([
      "Check 500",
      "Check 2000",
      "ShouldRateLimit 500",
      "ShouldRateLimit 2000",
    ]);
    for (const r of rows) {
      // A per-item error in an answer (e.g. NOT_OWNER) counts as an error, not as an answer.
      expect(r.errors, `${r.api} ${r.target_per_s}`).toBe(0);
      expect(r.achieved_per_s).toBeGreaterThan(0.95 * r.target_per_s);
    }
    expect(Object.keys(knee).sort()).toEqual(["Check", "ShouldRateLimit"]);
  });

  it("the baseline rows have the fields and the systems the issue names", () => {
    const rows = report.results!;
    for (const r of rows) {
      for (const f of ["system", "workload", "decisions_per_s", "cpu_s_per_s", "p50_ms", "p99_ms"])
        expect(r).toHaveProperty(f);
      expect(r.errors).toBe(0);
      expect(r.cpu_s_per_s).toBeGreaterThan(0);
    }
    const systems = new Set(rows.map((r) => r.system));
    expect(systems).toEqual(
      new Set(["shardlimit", "redis: rate-limiter-flexible", "redis: envoy-style fixed window"]),
    );
    // Batched: shardlimit decides locally, Redis pays a round trip per decision.
    const batched = (s: string) => rows.find((r) => r.system === s && r.workload.startsWith("batched"))!;
    expect(batched("shardlimit").decisions_per_cpu_s).toBeGreaterThan(
      batched("redis: rate-limiter-flexible").decisions_per_cpu_s,
    );
  });

  it("accuracy holds over loopback and in simulation; batched gateways see no errors through a SIGKILL and a rolling restart", () => {
    const a = report.accuracy!.loopback[0]!;
    expect(a.name).toMatch(/^A\./);
    expect(a.ratio).toBeGreaterThan(0.97);
    expect(a.ratio).toBeLessThan(1.03);
    expect(report.accuracy!.simulation.every((s) => s.pass)).toBe(true);
    const [kill, rolling] = report.failover!;
    expect(kill!.events[0]!.what).toMatch(/SIGKILL/);
    expect(kill!.batched_errors).toBe(0);
    expect(kill!.batched_decisions).toBeGreaterThan(0);
    expect(kill!.recovered_after_ms).toBeLessThan(10_000);
    expect(rolling!.events.filter((e) => e.what.startsWith("SIGTERM"))).toHaveLength(3);
    expect(rolling!.batched_errors).toBe(0);
    // CPU of the run: every process, and the servers' per 100 ms (a restarted server counts too).
    for (const f of [kill!, rolling!]) {
      expect(f.cpu_s_per_s).toBeGreaterThan(0);
      expect(f.timeline.server_cpu_s_per_s.length).toBeGreaterThan(10);
      expect(f.timeline.server_cpu_s_per_s.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    }
    const afterRestarts = rolling!.timeline.server_cpu_s_per_s.slice(-10);
    expect(afterRestarts.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });

  it("renders its HTML report to PNG in headless Chromium", { timeout: 60_000 }, () => {
    const page = readFileSync(html, "utf8");
    expect(page).toContain("<svg");
    expect(page).toMatch(/Admitted per second against the limit/);
    expect(page).toMatch(/Failover/);
    const png = path.join(dir, "bench.png");
    const r = spawnSync(
      "chromium",
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        `--screenshot=${png}`,
        "--window-size=1100,4000",
        `file://${html}`,
      ],
      { encoding: "utf8", timeout: 50_000 },
    );
    expect(existsSync(png), `${r.stdout}\n${r.stderr}`).toBe(true);
    const bytes = readFileSync(png);
    expect(bytes.subarray(1, 4).toString()).toBe("PNG");
    expect(statSync(png).size).toBeGreaterThan(20_000);
  });
});
