import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import {
  classFractions,
  DEFAULT_POOL_GAINS,
  DEMAND_HEADROOM,
  MAX_BACKENDS,
  MIN_LEVEL,
  Pool,
  PoolController,
  type PoolSettings,
} from "../../src/core/pool.js";
import { PRIORITY_RANK } from "../../src/core/priority.js";

/** The pool controller (issue 14) on a ManualClock: step responses, no windup, bounded fractions. */

const SETTINGS: PoolSettings = { name: "p", target: 0.8, idleBelow: 0.6 };
const STEP = DEFAULT_POOL_GAINS.stepMs;

/**
 * A closed loop: a pool of `capacity` offered `offered` units/s; the controller's level admits
 * e^level of it (overloaded) or adds level × target × capacity (idle, to as many borrowers as want
 * it, up to `borrowable`); utilisation is the admitted work over the capacity, smoothed (time
 * constant 100 ms), seen 100 ms late and clamped to [0, 1], as a CPU load is.
 */
function loop(clock: ManualClock, c: PoolController, offered: (t: number) => number, borrowable = 0) {
  const capacity = 1000;
  // The pool has been serving its offered load (within quotas) before the controller starts.
  let smoothed = Math.min(1, offered(0) / capacity);
  const history: number[] = [smoothed, smoothed];
  const trace: { t: number; utilisation: number; level: number; admitted: number }[] = [];
  const start = clock.now();
  const tick = () => {
    const t = clock.now() - start;
    const level = c.level;
    const quota = offered(t);
    const admitted =
      level < 0 ? quota * Math.exp(level) : quota + Math.min(borrowable, level * SETTINGS.target * capacity);
    history.push(admitted / capacity);
    const seen = history.length > 2 ? history[history.length - 3]! : 0;
    smoothed += (seen - smoothed) * (1 - Math.exp(-STEP / 100));
    c.step(Math.min(1, smoothed), STEP);
    trace.push({ t, utilisation: admitted / capacity, level: c.level, admitted });
    clock.after(STEP, tick);
  };
  clock.after(0, tick);
  return trace;
}

describe("PoolController", () => {
  it("step response: offered twice the capacity, held within ±5% of the target from 2 s on", () => {
    const clock = new ManualClock(0);
    const c = new PoolController(SETTINGS);
    const trace = loop(clock, c, () => 2000);
    clock.advance(10_000);
    const after = trace.filter((p) => p.t >= 2000);
    for (const p of after) expect(Math.abs(p.utilisation / 0.8 - 1)).toBeLessThanOrEqual(0.05);
    expect(c.mode).toBe("overloaded");
    // It sheds 60%: level = ln(0.4).
    expect(c.level).toBeCloseTo(Math.log(0.4), 2);
  });

  it("step response: the same loop gain whatever the overload (5x offered settles as fast)", () => {
    for (const offered of [1200, 5000]) {
      const clock = new ManualClock(0);
      const c = new PoolController(SETTINGS);
      const trace = loop(clock, c, () => offered);
      clock.advance(10_000);
      for (const p of trace.filter((p) => p.t >= 2500)) {
        expect(Math.abs(p.utilisation / 0.8 - 1)).toBeLessThanOrEqual(0.05);
      }
    }
  });

  it("below the target but above idleBelow: quota mode, the level stays 0", () => {
    const clock = new ManualClock(0);
    const c = new PoolController(SETTINGS);
    const trace = loop(clock, c, () => 700, 1000);
    clock.advance(5000);
    expect(trace.every((p) => p.level === 0)).toBe(true);
    expect(c.mode).toBe("quota");
  });

  it("idle: lends up to the target, ramping at most lendRisePerS, and takes it back within 1 s when load returns", () => {
    const clock = new ManualClock(0);
    const c = new PoolController(SETTINGS);
    let load = 300;
    const trace = loop(clock, c, () => load, 1000);
    clock.advance(6000);
    expect(c.mode).toBe("idle");
    for (let i = 1; i < trace.length; i++) {
      expect(trace[i]!.level - trace[i - 1]!.level).toBeLessThanOrEqual(
        (DEFAULT_POOL_GAINS.lendRisePerS * STEP) / 1000 + 1e-9,
      );
    }
    const settled = trace.filter((p) => p.t >= 3000);
    for (const p of settled) expect(Math.abs(p.utilisation / 0.8 - 1)).toBeLessThanOrEqual(0.05);
    load = 750;
    const returned = clock.now();
    clock.advance(3000);
    const back = trace.find((p) => p.t + 0 >= returned && p.level <= 0);
    expect(back).toBeDefined();
    expect(back!.t - returned).toBeLessThanOrEqual(1000);
    expect(c.mode).toBe("quota");
    expect(c.idle).toBe(false);
  });

  it("no windup: however long the output is saturated, it recovers in the same time", () => {
    const recovery = (saturatedMs: number) => {
      const c = new PoolController(SETTINGS);
      // Lending changes nothing (nobody borrows): the output saturates at its top.
      for (let t = 0; t < saturatedMs; t += STEP) c.step(0.3, STEP);
      expect(c.level).toBe(1);
      expect(c.integral).toBeLessThanOrEqual(1);
      let t = 0;
      while (c.level > 0) {
        c.step(1, STEP);
        t += STEP;
      }
      return t;
    };
    const short = recovery(5000);
    expect(recovery(600_000)).toBe(short);
    expect(short).toBeLessThanOrEqual(1500);
  });

  it("no windup downwards: the level stops at MIN_LEVEL, the integral no further, recovery the same", () => {
    const recovery = (saturatedMs: number) => {
      const c = new PoolController(SETTINGS);
      for (let t = 0; t < saturatedMs; t += STEP) c.step(1, STEP);
      expect(c.level).toBe(MIN_LEVEL);
      expect(c.integral).toBeGreaterThanOrEqual(MIN_LEVEL);
      let t = 0;
      while (c.level < 0) {
        c.step(0.5, STEP);
        t += STEP;
      }
      return t;
    };
    expect(recovery(600_000)).toBe(recovery(30_000));
  });

  it("a low reading while shedding does not stop the shedding at once (it is the shedding working)", () => {
    const c = new PoolController(SETTINGS);
    for (let t = 0; t < 1000; t += STEP) c.step(1, STEP);
    const before = c.level;
    expect(before).toBeLessThan(-0.5);
    c.step(0.3, STEP);
    expect(c.idle).toBe(false);
    expect(c.level).toBeLessThan(0);
    expect(c.mode).toBe("overloaded");
    // Back on target, it keeps shedding: the one reading moved the integral by one step only.
    for (let t = 0; t < 1000; t += STEP) c.step(0.8, STEP);
    expect(c.level).toBeLessThan(-0.5);
  });

  it("a wild reading moves the level by a bounded step", () => {
    const c = new PoolController(SETTINGS);
    c.step(0, STEP);
    expect(c.level).toBeLessThanOrEqual((DEFAULT_POOL_GAINS.lendRisePerS * STEP) / 1000);
    const d = new PoolController(SETTINGS);
    d.step(1, STEP);
    expect(d.level).toBeGreaterThanOrEqual(-(DEFAULT_POOL_GAINS.kp + (DEFAULT_POOL_GAINS.ki * STEP) / 1000));
  });
});

describe("classFractions", () => {
  it("fills the lowest class first", () => {
    expect(classFractions(0.6, [500, 500, 500, 500])).toEqual([1, 1, 0.4, 0]);
    expect(classFractions(0.1, [0, 1000, 0, 1000])).toEqual([0, 0.2, 0, 0]);
    expect(classFractions(0, [1, 2, 3, 4])).toEqual([0, 0, 0, 0]);
  });

  it("bounded: each fraction in [0, 1], they shed exactly `shed` of the total, lowest classes first", () => {
    fc.assert(
      fc.property(
        fc.double({ min: -1, max: 2, noNaN: true }),
        fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 4, maxLength: 4 }),
        (shed, rates) => {
          const f = classFractions(shed, rates);
          const total = rates.reduce((a, b) => a + b, 0);
          let dropped = 0;
          for (let i = 0; i < 4; i++) {
            expect(f[i]).toBeGreaterThanOrEqual(0);
            expect(f[i]).toBeLessThanOrEqual(1);
            dropped += f[i]! * rates[i]!;
            // A class is shed only once every class below it with demand is shed whole.
            if (f[i]! > 0) for (let j = 0; j < i; j++) if (rates[j]! > 0) expect(f[j]).toBe(1);
          }
          expect(dropped).toBeCloseTo(Math.max(0, Math.min(1, shed)) * total, 3);
        },
      ),
    );
  });
});

describe("Pool", () => {
  it("averages the live backends weighted by capacity and forgets silent ones", () => {
    const p = new Pool(SETTINGS);
    p.report("a", 1, 300, 0);
    p.report("b", 0.5, 100, 0);
    p.maybeStep(STEP);
    expect(p.snapshot().utilisation).toBeCloseTo((1 * 300 + 0.5 * 100) / 400, 9);
    expect(p.snapshot().capacity).toBe(400);
    // b keeps reporting, a falls silent past the TTL.
    for (let t = 2 * STEP; t <= DEFAULT_POOL_GAINS.backendTtlMs + 3 * STEP; t += STEP)
      p.report("b", 0.5, 100, t);
    expect(p.snapshot().backends).toBe(1);
    expect(p.snapshot().utilisation).toBe(0.5);
  });

  it("with no live backend the quotas alone decide", () => {
    const p = new Pool(SETTINGS);
    for (let t = 0; t < 3000; t += STEP) p.report("a", 1, 100, t);
    expect(p.snapshot().mode).toBe("overloaded");
    p.maybeStep(3000 + DEFAULT_POOL_GAINS.backendTtlMs + 1);
    const s = p.snapshot();
    expect([s.mode, s.level, s.backends, s.fractions]).toEqual(["quota", 0, 0, [0, 0, 0, 0]]);
  });

  it("refuses a backend past MAX_BACKENDS live ones, and takes it once silent ones expire", () => {
    const p = new Pool(SETTINGS);
    for (let i = 0; i < MAX_BACKENDS; i++) expect(p.report(`b${i}`, 0.5, 1, 0)).toBe(true);
    expect(p.report("late", 0.5, 1, 10)).toBe(false);
    expect(p.report("b0", 0.6, 1, 10)).toBe(true);
    expect(p.report("late", 0.5, 1, DEFAULT_POOL_GAINS.backendTtlMs + 20)).toBe(true);
  });

  it("sheds each class's fraction of its units exactly, without randomness", () => {
    const p = new Pool(SETTINGS);
    p.fractions = [1, 0.25, 0, 0];
    // maybeStep would recompute the fractions: keep the clock before the first step is due.
    let shedLow = 0;
    let shedNormal = 0;
    let shedHigh = 0;
    for (let i = 0; i < 400; i++) {
      if (p.shed(PRIORITY_RANK.low, 1, 0)) shedLow++;
      if (p.shed(PRIORITY_RANK.normal, 1, 0)) shedNormal++;
      if (p.shed(PRIORITY_RANK.high, 1, 0)) shedHigh++;
    }
    expect([shedLow, shedNormal, shedHigh]).toEqual([400, 100, 0]);
  });

  it("lends idle capacity max-min fairly: a small borrower gets its demand, two large ones split the rest", () => {
    const p = new Pool(SETTINGS);
    const clock = new ManualClock(0);
    const demand = { small: 50, big1: 400, big2: 400 };
    const got = { small: 0, big1: 0, big2: 0 };
    const arrivals = Object.entries(demand).map(([who, perS]) => ({
      who: who as keyof typeof got,
      every: 1000 / perS,
    }));
    for (const a of arrivals) {
      const next = () => {
        if (p.borrow(a.who, 1, clock.now()) && clock.now() >= 5000) got[a.who]++;
        clock.after(a.every, next);
      };
      clock.after(a.every, next);
    }
    // A pool at 30%: the controller lends up to the target (no load model here: it saturates).
    const report = () => {
      p.report("b", 0.3, 1000, clock.now());
      clock.after(100, report);
    };
    clock.after(0, report);
    clock.advance(15_000);
    const lent = p.snapshot().lending;
    expect(p.snapshot().mode).toBe("idle");
    expect(lent).toBeCloseTo(0.8 * 1000, 0);
    // Over 10 s: small gets its 50/s; the big ones ask 400 each and split the rest, less the
    // headroom kept on small's share (its share is 1.5 times its demand).
    const bigShare = (800 - DEMAND_HEADROOM * 50) / 2;
    expect(got.small / 10).toBeGreaterThan(49);
    expect(got.big1 / 10).toBeGreaterThan(bigShare - 5);
    expect(got.big1 / 10).toBeLessThanOrEqual(bigShare + 1);
    expect(Math.abs(got.big1 - got.big2)).toBeLessThanOrEqual(10);
  });
});
