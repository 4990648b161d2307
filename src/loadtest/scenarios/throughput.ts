import { runLoad } from "../load.js";
import { type Stack, startStack } from "../stack.js";
import { measured, round } from "./common.js";

export interface ThroughputResult {
  servers: number;
  gateways: number;
  offered_per_s: number;
  decisions_per_s: number;
  decisions_per_s_per_server: number;
  /** CPU seconds per wall second: every process, the servers alone, the gateways (load threads). */
  cpu_s_per_s: number;
  server_cpu_s_per_s: number;
  /** Decisions per CPU second of the servers: what one server core ingests in batched mode. */
  decisions_per_server_cpu_s: number;
  p99_ms: number;
  errors: number;
}

/** Batched mode end to end: gateways decide locally and report; servers ingest the reports. */
export async function throughput(o: {
  servers: number;
  gateways: number;
  seconds: number;
  rate: number;
  keys: number;
  /** A cluster to use (shared between scenarios, or `--target`); else one is started and stopped. */
  stack?: Stack;
}): Promise<ThroughputResult> {
  const stack = o.stack ?? (await startStack({ servers: o.servers }));
  try {
    const serverPids = () => stack.servers.map((s) => s.pid()).filter((p): p is number => p !== undefined);
    const m = await measured(
      () => [process.pid, ...stack.pids()],
      (onStart) =>
        runLoad({
          threads: o.gateways,
          ratePerSec: o.rate,
          seconds: o.seconds,
          keys: o.keys,
          onStart,
          specFor: (i) => ({
            kind: "shardlimit-batched",
            servers: stack.addresses(),
            clientId: `tp-gw-${i}`,
          }),
        }),
    );
    const serverCpu = serverPids().reduce((s, p) => s + (m.byPid[p] ?? 0), 0) / m.wallSeconds;
    const d = m.load.achievedPerSec;
    return {
      servers: o.servers,
      gateways: o.gateways,
      offered_per_s: o.rate,
      decisions_per_s: Math.round(d),
      decisions_per_s_per_server: Math.round(d / o.servers),
      cpu_s_per_s: round(m.cpuSeconds / m.wallSeconds),
      server_cpu_s_per_s: round(serverCpu),
      decisions_per_server_cpu_s: Math.round(d / Math.max(1e-6, serverCpu)),
      p99_ms: m.load.latency.p99Us / 1000,
      errors: m.load.errors,
    };
  } finally {
    if (!o.stack) await stack.stop();
  }
}
