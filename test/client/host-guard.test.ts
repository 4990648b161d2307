import client from "prom-client";
import { describe, expect, it } from "vitest";
import { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { HostGuard, type HostGuardOptions } from "../../src/client/host-guard.js";
import { registerClientMetrics } from "../../src/client/metrics.js";
import type { ClientTransport } from "../../src/client/transport.js";
import { PRIORITIES, type Priority } from "../../src/config/types.js";
import { ManualClock } from "../../src/core/clock.js";
import { seededRandom } from "../../src/core/random.js";
import { config, FakeTransport } from "../../src/testkit/fake-transport.js";

/** The host guard: local shedding by priority class while the host's own load is too high. */

/** A load figure the test sets, as an application gauge. */
function fakeLoad(threshold = 0.8) {
  const load = { value: 0 };
  return { load, gauges: [{ name: "load", read: () => load.value, threshold }] };
}

function guardOn(extra: Partial<HostGuardOptions> = {}) {
  const clock = new ManualClock(1_000_000);
  const { load, gauges } = fakeLoad();
  const guard = new HostGuard({ gauges, sampleMs: 100, ...extra }, clock);
  guard.start();
  const samples = (n: number) => clock.advance(n * 100);
  const shed = () => PRIORITIES.map((p) => guard.shedFraction(p));
  return { clock, load, guard, samples, shed };
}

/** Admitted share of `n` requests of class `p` now. */
function admittedShare(guard: HostGuard, p: Priority, n = 2000, seed = 1): number {
  const random = seededRandom(seed);
  let ok = 0;
  for (let i = 0; i < n; i++) if (guard.admit(p, random())) ok++;
  return ok / n;
}

describe("HostGuard", () => {
  it("sheds nothing under its thresholds", () => {
    const { load, guard, samples, shed } = guardOn();
    load.value = 0.5;
    samples(20);
    expect(shed()).toEqual([0, 0, 0, 0]);
    expect(admittedShare(guard, "low")).toBe(1);
  });

  it("over a threshold sheds lowest class first, critical last, a class whole before the next", () => {
    const { load, guard, samples, shed } = guardOn();
    load.value = 0.95;
    samples(1);
    expect(shed()).toEqual([0.25, 0, 0, 0]);
    const low = admittedShare(guard, "low");
    expect(low).toBeGreaterThan(0.7);
    expect(low).toBeLessThan(0.8);
    expect(admittedShare(guard, "normal")).toBe(1);
    samples(5);
    expect(shed()).toEqual([1, 0.5, 0, 0]);
    expect(admittedShare(guard, "low")).toBe(0);
    samples(6);
    expect(shed()).toEqual([1, 1, 1, 0]);
    expect(admittedShare(guard, "critical")).toBe(1);
    samples(4);
    expect(shed()).toEqual([1, 1, 1, 1]);
    samples(4);
    expect(guard.level).toBe(4); // capped
  });

  it("holds within the hysteresis band and recovers below it, critical first", () => {
    const { load, guard, samples, shed } = guardOn();
    load.value = 0.95;
    samples(10); // level 2.5
    load.value = 0.75; // under 0.8 but within 10% of it
    samples(10);
    expect(guard.level).toBe(2.5);
    load.value = 0.7;
    samples(5); // 0.1 a sample
    expect(guard.level).toBe(2);
    expect(shed()).toEqual([1, 1, 0, 0]);
    samples(20);
    expect(shed()).toEqual([0, 0, 0, 0]);
  });

  it("a reading that is not a number, or a gauge that throws, neither sheds nor holds", () => {
    const clock = new ManualClock(0);
    let v = Number.NaN;
    const guard = new HostGuard(
      {
        sampleMs: 100,
        gauges: [
          { name: "nan", read: () => v, threshold: 1 },
          {
            name: "broken",
            read: () => {
              throw new Error("gauge broke");
            },
            threshold: 1,
          },
        ],
      },
      clock,
    );
    guard.start();
    clock.advance(1000);
    expect(guard.level).toBe(0);
    v = 2;
    clock.advance(100);
    expect(guard.level).toBe(0.25);
    v = Number.NaN;
    clock.advance(500);
    expect(guard.level).toBe(0);
    expect(Number.isNaN(guard.state().readings.broken)).toBe(true);
  });

  it("stops sampling when stopped", () => {
    const { load, guard, samples } = guardOn();
    load.value = 2;
    samples(2);
    guard.stop();
    samples(10);
    expect(guard.level).toBe(0.5);
  });

  it("reads this process's CPU in cores over the clock's time", () => {
    const clock = new ManualClock(0);
    const guard = new HostGuard({ cpu: { threshold: 0.5 }, sampleMs: 10 }, clock);
    guard.start();
    // 20 ms of CPU, while the clock moves 10 ms: two cores' worth, over the threshold.
    const start = process.cpuUsage();
    for (;;) {
      const used = process.cpuUsage(start);
      if (used.user + used.system >= 20_000) break;
    }
    clock.advance(10);
    expect(guard.state().readings.cpu).toBeGreaterThanOrEqual(2);
    expect(guard.level).toBe(0.25);
    guard.stop();
  });

  it("reads the host's busy fraction of all its cores (system scope), between 0 and 1", () => {
    const clock = new ManualClock(0);
    const guard = new HostGuard({ cpu: { threshold: 2, scope: "system" }, sampleMs: 10 }, clock);
    const start = process.cpuUsage();
    for (;;) {
      const used = process.cpuUsage(start);
      if (used.user + used.system >= 50_000) break;
    }
    guard.sample();
    const v = guard.state().readings.cpu!;
    expect(v).toBeGreaterThan(0);
    expect(v).toBeLessThanOrEqual(1);
    expect(guard.level).toBe(0);
  });

  it("an event-loop delay with no measurement yet is no reading, and the histogram is released on stop", () => {
    const clock = new ManualClock(0);
    const guard = new HostGuard({ eventLoopDelay: { thresholdMs: 1 }, sampleMs: 10 }, clock);
    guard.start();
    guard.sample(); // synchronously after enabling: the loop has not turned, nothing measured
    expect(Number.isNaN(guard.state().readings.event_loop_delay_ms)).toBe(true);
    expect(guard.level).toBe(0);
    guard.stop();
  });

  it.each<[string, HostGuardOptions, RegExp]>([
    ["no signal", {}, /hostGuard needs at least one signal/],
    [
      "a zero threshold",
      { cpu: { threshold: 0 } },
      /hostGuard\.cpu\.threshold must be a finite number above 0, got 0/,
    ],
    [
      "a bad scope",
      { cpu: { threshold: 1, scope: "host" as "system" } },
      /hostGuard\.cpu\.scope must be process or system/,
    ],
    [
      "a bad percentile",
      { eventLoopDelay: { thresholdMs: 50, percentile: 101 } },
      /hostGuard\.eventLoopDelay\.percentile must be in \(0, 100\]/,
    ],
    [
      "a gauge without read",
      { gauges: [{ name: "q", threshold: 1 } as never] },
      /hostGuard\.gauges\[0\]\.read must be a function/,
    ],
    [
      "a gauge with a bad name",
      { gauges: [{ name: "Queue Length", read: () => 1, threshold: 1 }] },
      /hostGuard\.gauges\[0\]\.name must be a short name/,
    ],
    [
      "a NaN gauge threshold",
      { gauges: [{ name: "q", read: () => 1, threshold: Number.NaN }] },
      /hostGuard\.gauges\[0\]\.threshold must be a finite number above 0, got NaN/,
    ],
    [
      "two signals of one name",
      {
        gauges: [
          { name: "q", read: () => 1, threshold: 1 },
          { name: "q", read: () => 1, threshold: 2 },
        ],
      },
      /two signals named q/,
    ],
    [
      "a sampleMs of 0",
      { cpu: { threshold: 1 }, sampleMs: 0 },
      /hostGuard\.sampleMs must be a number in \[1, 60000\]/,
    ],
    ["a hysteresis of 1", { cpu: { threshold: 1 }, hysteresis: 1 }, /hostGuard\.hysteresis must be a number/],
    ["a riseStep of 0", { cpu: { threshold: 1 }, riseStep: 0 }, /hostGuard\.riseStep must be a number/],
  ])("refuses %s, naming the field", (_, options, message) => {
    expect(() => new HostGuard(options, new ManualClock(0))).toThrow(message);
  });

  it("refuses a class that is not one", () => {
    const { guard } = guardOn();
    expect(() => guard.admit("urgent" as Priority, 0.5)).toThrow(/priority "urgent" is not one of/);
    expect(() => guard.admit("toString" as Priority, 0.5)).toThrow(/is not one of/);
  });
});

/** A transport that throws while `armed`: a call made on the decision path fails the test. */
function tripwire(t: FakeTransport): { transport: ClientTransport; armed: { on: boolean; calls: number } } {
  const armed = { on: false, calls: 0 };
  const transport = new Proxy(t, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (armed.on) {
          armed.calls++;
          throw new Error(`network call ${String(prop)} on the decision path`);
        }
        return v.apply(target, args);
      };
    },
  });
  return { transport, armed };
}

describe("GatewayLimiter with a host guard", () => {
  /** A gateway on a FakeTransport behind the tripwire, the limits known, the guard on a fake load. */
  function gateway() {
    const { load, gauges } = fakeLoad();
    const clock = new ManualClock(600_000);
    const t = new FakeTransport(clock, config(), ["a:1"]);
    const { transport, armed } = tripwire(t);
    const limiter = new GatewayLimiter({
      servers: ["a:1"],
      clientId: "gw1",
      transport,
      clock,
      random: seededRandom(7),
      hostGuard: { gauges, sampleMs: 100 },
    });
    limiter.start();
    const run = (ms: number) => clock.runUntil(clock.now() + ms);
    run(300);
    return { t, limiter, load, armed, run };
  }

  it("sheds by class with no network call on the path, and recovers when the load falls", async () => {
    const { limiter, load, armed, run } = gateway();
    expect(limiter.ready).toBe(true);
    load.value = 0.95;
    run(600); // six samples over: low shed whole, normal half
    const counts: Record<string, number> = {};
    armed.on = true;
    for (const p of PRIORITIES) {
      counts[p] = 0;
      for (let i = 0; i < 1000; i++) if (limiter.decide("api/free=x", 1, { priority: p })) counts[p]++;
    }
    // A key naming its class is shed by it too; so are wait, check and begin (acquire below).
    expect(limiter.decide("api/tenant=x/priority=low")).toBe(false);
    expect(limiter.begin("api/tenant=y", { priority: "low" })).toBeNull();
    expect(await limiter.check("api/tenant=x/priority=low")).toBe(false);
    expect(await limiter.wait("api/tenant=x/priority=low", 1, { timeoutMs: 5000 })).toBe(false);
    expect(armed.calls).toBe(0);
    // The tripwire is live: a critical check, which the guard lets through, does call the owner.
    await expect(limiter.check("api/tenant=x/priority=critical")).rejects.toThrow(/network call check/);
    expect(armed.calls).toBe(1);
    armed.on = false;
    expect(counts.low).toBe(0);
    expect(counts.normal).toBeGreaterThan(400);
    expect(counts.normal).toBeLessThan(600);
    expect(counts.high).toBe(1000);
    expect(counts.critical).toBe(1000);
    load.value = 0.1;
    run(2000);
    expect(limiter.guard!.level).toBe(0);
    expect(limiter.decide("api/tenant=z", 1, { priority: "low" })).toBe(true);
    limiter.close();
  });

  it("shed requests are not counted on the key: its owner sees no demand from them", () => {
    const { limiter, load, run, t } = gateway();
    load.value = 2;
    run(1500); // everything but critical shed
    const before = t.reports.length;
    for (let i = 0; i < 100; i++) expect(limiter.decide("api/tenant=q", 1, { priority: "high" })).toBe(false);
    expect(limiter.acquire("api/conc=c")).toBe(false);
    run(500);
    const sent = t.reports.slice(before).flatMap((r) => r.req.entries);
    expect(sent.reduce((s, e) => s + e.admitted + e.rejected, 0)).toBe(0);
    limiter.close();
  });

  it("exports its figures in the gateway's registry", async () => {
    const { limiter, load, run } = gateway();
    const registry = new client.Registry();
    registerClientMetrics(registry, limiter);
    load.value = 0.9;
    run(200);
    limiter.decide("api/tenant=m", 1, { priority: "low" });
    const text = await registry.metrics();
    expect(text).toContain('shardlimit_client_host_guard_signal{signal="load"} 0.9');
    expect(text).toContain('shardlimit_client_host_guard_threshold{signal="load"} 0.8');
    expect(text).toContain('shardlimit_client_host_guard_shed_fraction{priority="low"} 0.5');
    expect(text).toContain('shardlimit_client_host_guard_shed_fraction{priority="critical"} 0');
    expect(text).toMatch(
      /shardlimit_client_host_guard_requests_total\{priority="low",result="(shed|admitted)"\} 1/,
    );
    limiter.close();
  });
});
