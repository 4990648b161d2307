import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { MAX_TENANT_LABELS, PromMetrics, registerPoolMetrics } from "../../src/server/metrics.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

async function live(m: PromMetrics): Promise<number> {
  const text = await m.registry.metrics();
  const v = /^shardlimit_heap_live_bytes (\S+)$/m.exec(text)?.[1];
  if (v === undefined) throw new Error("no shardlimit_heap_live_bytes in /metrics");
  return Number(v);
}

describe("shardlimit_heap_live_bytes", () => {
  it("is the heap that survived the latest major GC: up with what is kept, down once it is let go", async () => {
    const m = new PromMetrics({ counters: () => 0, clients: () => 0, ready: () => true });
    const afterGc = async () => {
      gc();
      // The GC is reported to observers on a later turn.
      await new Promise((r) => setTimeout(r, 20));
      return live(m);
    };
    const base = await afterGc();
    expect(base).toBeGreaterThan(1e6);
    let kept: number[][] | undefined = Array.from({ length: 200 }, () =>
      Array.from({ length: 10_000 }, (_, i) => i + 0.5),
    );
    const grown = await afterGc();
    expect(grown - base).toBeGreaterThan(10e6); // 2M doubles: 16 MB
    expect(kept.length).toBe(200);
    kept = undefined;
    const released = await afterGc();
    expect(grown - released).toBeGreaterThan(10e6);
  });
});

describe("shardlimit_tenant_units_total", () => {
  it("names the first tenants one by one and folds the rest into (other), so series stay bounded", async () => {
    const m = new PromMetrics({ counters: () => 0, clients: () => 0, ready: () => true });
    m.setDomains(["ai"]);
    for (let i = 0; i < MAX_TENANT_LABELS + 50; i++) m.tenant("ai", `t${i}`, "normal", "admitted", 1);
    m.tenant("ai", "t0", "normal", "admitted", 2);
    const lines = (await m.registry.metrics())
      .split("\n")
      .filter((l) => l.startsWith("shardlimit_tenant_units_total{"));
    expect(lines).toHaveLength(MAX_TENANT_LABELS + 1);
    expect(lines).toContain(
      'shardlimit_tenant_units_total{domain="ai",tenant="t0",priority="normal",result="admitted"} 3',
    );
    expect(lines).toContain(
      'shardlimit_tenant_units_total{domain="ai",tenant="(other)",priority="normal",result="admitted"} 50',
    );
  });
});

describe("pool metrics (issue 14)", () => {
  it("shows each live pool's mode, controller state and per-class fractions; pools without backends not at all", async () => {
    const m = new PromMetrics({ counters: () => 0, clients: () => 0, ready: () => true });
    const snapshot = {
      name: "gpu",
      mode: "overloaded" as const,
      target: 0.8,
      idleBelow: 0.6,
      utilisation: 0.82,
      level: -0.9,
      integral: -0.85,
      fractions: [1, 1, 0.4, 0],
      backends: 10,
      capacity: 1000,
      lending: 0,
      borrowers: 0,
    };
    registerPoolMetrics(m.registry, {
      snapshots: () => [snapshot, { ...snapshot, name: "cold", backends: 0 }],
    });
    const text = await m.registry.metrics();
    expect(text).toContain('shardlimit_pool_utilisation{pool="gpu"} 0.82');
    expect(text).toContain('shardlimit_pool_level{pool="gpu"} -0.9');
    expect(text).toContain('shardlimit_pool_integral{pool="gpu"} -0.85');
    expect(text).toContain('shardlimit_pool_mode{pool="gpu",mode="overloaded"} 1');
    expect(text).toContain('shardlimit_pool_mode{pool="gpu",mode="idle"} 0');
    expect(text).toContain('shardlimit_pool_reject_fraction{pool="gpu",priority="high"} 0.4');
    expect(text).toContain('shardlimit_pool_reject_fraction{pool="gpu",priority="critical"} 0');
    expect(text).not.toContain('pool="cold"');
  });
});
