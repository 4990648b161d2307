import { runLoad } from "../load.js";
import { type Stack, startStack } from "../stack.js";
import { measured, round } from "./common.js";

export interface SyncRow {
  api: "Check" | "ShouldRateLimit";
  target_per_s: number;
  achieved_per_s: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  cpu_s_per_s: number;
  errors: number;
}

export interface SyncResult {
  servers: number;
  rows: SyncRow[];
  /** Per API: the highest rate achieved within 95% with P99 under 10x its P99 at the lowest rate. */
  knee: Record<string, number>;
}

/** Synchronous APIs at rising open-loop rates, to find where latency turns (the knee). */
export async function sync(o: {
  servers: number;
  gateways: number;
  seconds: number;
  rates: number[];
  keys: number;
  /** A cluster to use (shared between scenarios, or `--target`); else one is started and stopped. */
  stack?: Stack;
}) {
  const stack = o.stack ?? (await startStack({ servers: o.servers }));
  const rows: SyncRow[] = [];
  try {
    for (const api of ["Check", "ShouldRateLimit"] as const) {
      for (const rate of o.rates) {
        const m = await measured(
          () => [process.pid, ...stack.pids()],
          (onStart) =>
            runLoad({
              threads: o.gateways,
              ratePerSec: rate,
              seconds: o.seconds,
              keys: o.keys,
              onStart,
              warmupSeconds: 0.5,
              // The lean HTTP/2 client, so that the knee is the servers' and not grpc-js's client
              // (~1 ms a call here); Check to each key's owner, ShouldRateLimit to any server
              // (as Envoy sends it), which passes descriptors it does not own to their owners.
              specFor: (i) =>
                api === "Check"
                  ? { kind: "check-h2", servers: stack.addresses(), route: true }
                  : { kind: "envoy-h2", address: stack.addresses()[i % stack.addresses().length]! },
            }),
        );
        rows.push({
          api,
          target_per_s: rate,
          achieved_per_s: Math.round(m.load.achievedPerSec),
          p50_ms: m.load.latency.p50Us / 1000,
          p99_ms: m.load.latency.p99Us / 1000,
          p999_ms: m.load.latency.p999Us / 1000,
          cpu_s_per_s: round(m.cpuSeconds / m.wallSeconds),
          errors: m.load.errors,
        });
      }
    }
  } finally {
    if (!o.stack) await stack.stop();
  }
  const knee: Record<string, number> = {};
  for (const api of ["Check", "ShouldRateLimit"]) {
    const rs = rows.filter((r) => r.api === api);
    const floor = rs[0]?.p99_ms ?? 0;
    let best = 0;
    for (const r of rs) {
      if (r.achieved_per_s >= 0.95 * r.target_per_s && r.p99_ms <= 10 * Math.max(floor, 1))
        best = r.target_per_s;
    }
    knee[api] = best;
  }
  return { servers: o.servers, rows, knee } satisfies SyncResult;
}
