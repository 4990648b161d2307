import { performance } from "node:perf_hooks";
import { type LatencySummary, latencyHistogram, summarize } from "./common.js";
import type { Caller } from "./raw-client.js";

export interface OpenLoopResult {
  targetPerSec: number;
  achievedPerSec: number;
  sent: number;
  completed: number;
  errors: number;
  firstError: string | undefined;
  /** From the scheduled send time to the answer: includes any wait the generator itself caused. */
  latency: LatencySummary;
  /** From the actual send to the answer. */
  service: LatencySummary;
  /** How late sends left against their schedule (the generator's own lag). */
  sendLag: LatencySummary;
  maxInFlight: number;
  clientCpuPerWallS: number;
}

/**
 * Open loop: call i is due at start + i/rate whatever happened to earlier calls, and its latency
 * is measured from that due time (no coordinated omission: a stall delays the sends behind it and
 * their latency shows it). The schedule is kept by a setImmediate loop, so the generator spins one
 * core while it runs.
 */
export function openLoop(
  client: Caller,
  method: string,
  ratePerSec: number,
  seconds: number,
  request: (i: number) => Buffer,
): Promise<OpenLoopResult> {
  const total = Math.floor(ratePerSec * seconds);
  const intervalMs = 1000 / ratePerSec;
  const lat = latencyHistogram();
  const service = latencyHistogram();
  const lag = latencyHistogram();
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  let inFlight = 0;
  let maxInFlight = 0;
  let i = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now() + 5;
  return new Promise((resolve) => {
    const finish = () => {
      const wallS = (performance.now() - start) / 1000;
      const cpu = process.cpuUsage(cpu0);
      resolve({
        targetPerSec: ratePerSec,
        achievedPerSec: completed / wallS,
        sent: i,
        completed,
        errors,
        firstError,
        latency: summarize(lat),
        service: summarize(service),
        sendLag: summarize(lag),
        maxInFlight,
        clientCpuPerWallS: (cpu.user + cpu.system) / 1e6 / wallS,
      });
    };
    const tick = () => {
      const now = performance.now();
      while (i < total && start + i * intervalMs <= now) {
        const due = start + i * intervalMs;
        const sentAt = performance.now();
        lag.recordValue(Math.max(1, Math.round((sentAt - due) * 1000)));
        inFlight++;
        if (inFlight > maxInFlight) maxInFlight = inFlight;
        client.call(method, request(i), (err) => {
          const t = performance.now();
          inFlight--;
          if (err) {
            errors++;
            firstError ??= `${err.code} ${err.details}`;
          } else {
            completed++;
            lat.recordValue(Math.max(1, Math.round((t - due) * 1000)));
            service.recordValue(Math.max(1, Math.round((t - sentAt) * 1000)));
          }
          if (i >= total && inFlight === 0) finish();
        });
        i++;
      }
      if (i < total) setImmediate(tick);
    };
    setImmediate(tick);
  });
}
