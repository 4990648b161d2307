import type { ScenarioResult } from "./accuracy.js";
import { simGateways } from "./flows.js";
import { T0 } from "./simulation.js";
import { tokenBucket } from "./yaml.js";

/**
 * Scenario L: callers that wait for quota (`GatewayLimiter.wait`, seed 001's blocking
 * acquisition) instead of failing. Each caller is a closed loop: it waits; on true it calls again
 * at once, on false (its timeout) it records the timeout and calls again. The real gateways and
 * servers on the simulated cluster, on one virtual clock; callbacks (`waitThen`) rather than
 * promises, since the clock runs synchronously and a promise would only settle after the run.
 */

export interface WaitingSpec {
  limitPerS: number;
  callers: number;
  gateways: number;
  timeoutMs: number;
  seconds: number;
  /** Measured from this second since traffic started (the bucket starts full). */
  from: number;
  seed: number;
}

export interface WaitingRun {
  /** Admitted per second over the measured span. */
  ratePerS: number;
  admitted: number;
  timeouts: number;
  /** Waits admitted out of FIFO order on their gateway (a later caller before an earlier one). */
  fifoViolations: number;
  /** Largest (and smallest) gap between a timeout's due time and when its caller heard of it, ms. */
  maxTimeoutLateMs: number;
  minTimeoutLateMs: number;
  /** Decisions tried for waiters, and timers set for them, per admitted request (all gateways). */
  attemptsPerAdmitted: number;
  timersPerAdmitted: number;
  wallMs: number;
}

export function simulateWaiting(spec: WaitingSpec): WaitingRun {
  const started = performance.now();
  const { random, clock, gateways } = simGateways(tokenBucket(spec.limitPerS), 3, spec.gateways, spec.seed);
  const end = T0 + spec.seconds * 1000;
  const from = T0 + spec.from * 1000;
  const key = "sim/k=v";
  let admitted = 0;
  let timeouts = 0;
  let fifoViolations = 0;
  let maxLate = Number.NEGATIVE_INFINITY;
  let minLate = Number.POSITIVE_INFINITY;
  /** Per gateway: the start number of the last wait it admitted (FIFO: these only grow). */
  const lastAdmitted = gateways.map(() => -1);
  let seq = 0;

  let closing = false;
  const call = (c: number): void => {
    if (clock.now() >= end) return;
    const g = c % spec.gateways;
    const n = seq++;
    const at = clock.now();
    gateways[g]!.waitThen(key, 1, { timeoutMs: spec.timeoutMs }, (ok) => {
      const now = clock.now();
      if (closing) return; // the run is over: `close` answers the callers still waiting
      if (ok) {
        if (n < lastAdmitted[g]!) fifoViolations++;
        lastAdmitted[g] = n;
        if (now >= from && now < end) admitted++;
      } else {
        const late = now - (at + spec.timeoutMs);
        maxLate = Math.max(maxLate, late);
        minLate = Math.min(minLate, late);
        if (now >= from && now < end) timeouts++;
      }
      // The next call a millisecond later: a real caller's next turn of the event loop takes some
      // time, and a loop in zero virtual time would never end while a policy admits everything.
      clock.after(1, () => call(c));
    });
  };
  // The gateways learn the limits and the assignment in the first virtual second.
  for (let c = 0; c < spec.callers; c++) clock.after(1000 + random(), () => call(c));
  clock.runUntil(end);
  closing = true;
  let attempts = 0;
  let timers = 0;
  for (const gw of gateways) {
    const w = gw.waitStats();
    attempts += w.attempts;
    timers += w.timers;
    gw.close();
  }
  const total = Math.max(1, seq - spec.callers);
  return {
    ratePerS: admitted / (spec.seconds - spec.from),
    admitted,
    timeouts,
    fifoViolations,
    maxTimeoutLateMs: Number.isFinite(maxLate) ? maxLate : 0,
    minTimeoutLateMs: Number.isFinite(minLate) ? minLate : 0,
    // Over every wait answered (admitted or not), since start: what each costs the gateway.
    attemptsPerAdmitted: attempts / total,
    timersPerAdmitted: timers / total,
    wallMs: performance.now() - started,
  };
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}

export interface WaitingScenario {
  name: string;
  run(): ScenarioResult;
}

/** Scenario L, full length or `quick`, as `shardlimit bench accuracy` reports it. */
export function waitingScenarios(quick: boolean, seed: number): WaitingScenario[] {
  const name = "L. waiting: 50 callers over 5 gateways wait (timeout 500 ms) on a 100/s token bucket";
  const seconds = quick ? 20 : 60;
  // Until the first policies arrive the callers' loops run on the optimistic allowance and the
  // first ALLOW (some 500 requests); the bucket pays that debt back in the first few seconds.
  const from = 5;
  return [
    {
      name,
      run: () => {
        const r = simulateWaiting({
          limitPerS: 100,
          callers: 50,
          gateways: 5,
          timeoutMs: 500,
          seconds,
          from,
          seed,
        });
        const ratio = r.ratePerS / 100;
        const pass =
          ratio >= 0.98 &&
          ratio <= 1.02 &&
          r.fifoViolations === 0 &&
          r.timeouts > 0 &&
          r.minTimeoutLateMs >= 0 &&
          r.maxTimeoutLateMs <= 10 &&
          r.attemptsPerAdmitted + r.timersPerAdmitted <= 3;
        return {
          name,
          limit: 100,
          offered: r.admitted + r.timeouts,
          admitted: r.admitted,
          ratio: round(ratio),
          pass,
          target:
            "[0.98, 1.02]; FIFO per gateway; every timeout answered within 10 ms of its due time; decisions tried plus timers set per wait <= 3",
          from_s: from,
          to_s: seconds,
          // Closed-loop callers: an exact central limiter admits exactly the limit.
          ideal_admitted: 100 * (seconds - from),
          detail: {
            timeouts: r.timeouts,
            fifo_violations: r.fifoViolations,
            max_timeout_late_ms: round(r.maxTimeoutLateMs),
            attempts_per_wait: round(r.attemptsPerAdmitted),
            timers_per_wait: round(r.timersPerAdmitted),
          },
          sim_wall_ms: Math.round(r.wallMs),
          reports: 0,
          failed_reports: 0,
        };
      },
    },
  ];
}
