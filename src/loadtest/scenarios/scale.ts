import { startStack } from "../stack.js";
import { throughput } from "./throughput.js";

export interface ScaleRow {
  servers: number;
  decisions_per_s: number;
  decisions_per_s_per_server: number;
  server_cpu_s_per_s: number;
  decisions_per_server_cpu_s: number;
  /** Decisions/s over n times the one-server figure. */
  scaling: number;
}

/**
 * The same batched load on 1, 2, ... servers: one cluster scaled out, a server joining before
 * each step (the assigner gives it slices; the next step starts once it owns some and every
 * server is ready). On a machine with fewer cores than processes the servers share CPUs, so the
 * per-server-CPU figure is the one that shows scaling.
 */
export async function scale(o: { maxServers: number; gateways: number; seconds: number; rate: number }) {
  const rows: ScaleRow[] = [];
  const stack = await startStack({ servers: 1 });
  try {
    for (let n = 1; n <= o.maxServers; n++) {
      if (n > 1) await stack.addServer();
      // `rate` is per server: n servers are offered n times as much.
      const t = await throughput({
        servers: n,
        gateways: o.gateways,
        seconds: o.seconds,
        rate: o.rate * n,
        keys: 10_000,
        stack,
      });
      const one = rows[0]?.decisions_per_s ?? t.decisions_per_s;
      rows.push({
        servers: n,
        decisions_per_s: t.decisions_per_s,
        decisions_per_s_per_server: t.decisions_per_s_per_server,
        server_cpu_s_per_s: t.server_cpu_s_per_s,
        decisions_per_server_cpu_s: t.decisions_per_server_cpu_s,
        scaling: Math.round((t.decisions_per_s / (n * one)) * 1000) / 1000,
      });
    }
  } finally {
    await stack.stop();
  }
  return rows;
}
