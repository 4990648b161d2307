import { waitAllReady } from "../../testkit/serve.js";
import { CpuTimeline } from "../cpu.js";
import { type LoadResult, runLoad } from "../load.js";
import { type Stack, startStack } from "../stack.js";
import { measured, round } from "./common.js";

export interface FailoverEvent {
  at_ms: number;
  what: string;
}

export interface FailoverRun {
  name: string;
  events: FailoverEvent[];
  /** Batched mode: decisions made by the gateways, and how many failed (decide() has no error path). */
  batched_decisions: number;
  batched_errors: number;
  /** Sync Check calls through the owner-routing client: calls, and calls that failed. */
  sync_calls: number;
  sync_errors: number;
  /** From the failure to the last failed sync call (0 when none failed). */
  recovered_after_ms: number;
  /** CPU seconds per wall second of every process (load threads, servers, etcd) over the run. */
  cpu_s_per_s: number;
  /**
   * Per 100 ms since the load started: batched decisions, sync OK, sync failed, and the servers'
   * CPU seconds per second (a restarted server counts under its new process).
   */
  timeline: { batched: number[]; sync_ok: number[]; sync_err: number[]; server_cpu_s_per_s: number[] };
}

async function withLoad(
  stack: Stack,
  o: { gateways: number; seconds: number; batchedRate: number; syncRate: number },
  inject: (elapsedMs: number, events: FailoverEvent[]) => void,
) {
  const events: FailoverEvent[] = [];
  const common = { seconds: o.seconds, keys: 1000, warmupSeconds: 0.5 };
  const serverCpu = new CpuTimeline(() =>
    stack.servers.map((s) => s.pid()).filter((p): p is number => p !== undefined),
  );
  // Both loads start together; the CPU of the whole run counts from when the sync load (which
  // injects the failures) starts its measured part.
  let batched: Promise<LoadResult> | undefined;
  const m = await measured(
    () => [process.pid, ...stack.pids()],
    (onStart) => {
      batched = runLoad({
        ...common,
        threads: o.gateways,
        ratePerSec: o.batchedRate,
        specFor: (i) => ({ kind: "shardlimit-batched", servers: stack.addresses(), clientId: `fo-gw-${i}` }),
      });
      return runLoad({
        ...common,
        threads: 1,
        ratePerSec: o.syncRate,
        specFor: () => ({ kind: "shardlimit-check", servers: stack.addresses(), clientId: "fo-sync" }),
        onStart: () => {
          onStart();
          serverCpu.start();
        },
        onTick: (ms) => {
          serverCpu.sample();
          inject(ms, events);
        },
      });
    },
  );
  return {
    batched: await batched!,
    sync: m.load,
    events,
    cpuPerS: m.cpuSeconds / m.wallSeconds,
    serverCpuPerS: serverCpu.perSample.map((c) => round(c * 10)),
  };
}

function summarize(name: string, r: Awaited<ReturnType<typeof withLoad>>): FailoverRun {
  const failAt = r.events[0]?.at_ms ?? 0;
  let lastErr = -1;
  r.sync.errPer100ms.forEach((n, i) => {
    if (n > 0) lastErr = i;
  });
  return {
    name,
    events: r.events,
    batched_decisions: r.batched.completed,
    batched_errors: r.batched.errors,
    sync_calls: r.sync.completed + r.sync.errors,
    sync_errors: r.sync.errors,
    recovered_after_ms: lastErr < 0 ? 0 : Math.max(0, (lastErr + 1) * 100 - failAt),
    cpu_s_per_s: round(r.cpuPerS),
    timeline: {
      batched: r.batched.okPer100ms,
      sync_ok: r.sync.okPer100ms,
      sync_err: r.sync.errPer100ms,
      server_cpu_s_per_s: r.serverCpuPerS,
    },
  };
}

/**
 * Failures under load on a real cluster: one server SIGKILLed mid-run (its lease expires, its
 * slices move), then a rolling restart of every server (SIGTERM hands counters over, then a
 * restart). Gateways decide in batched mode throughout; a sync client checks through the owners.
 */
export async function failover(o: {
  servers: number;
  gateways: number;
  seconds: number;
  /** The rolling restart's run (it must outlast three restarts). */
  rollingSeconds: number;
  batchedRate: number;
  syncRate: number;
}): Promise<FailoverRun[]> {
  const runs: FailoverRun[] = [];
  const stack = await startStack({ servers: Math.max(2, o.servers) });
  try {
    const victim = stack.servers.at(-1)!;
    let killed = false;
    const k = await withLoad(stack, o, (ms, events) => {
      if (!killed && ms >= (o.seconds * 1000) / 4) {
        killed = true;
        events.push({ at_ms: Math.round(ms), what: `SIGKILL ${victim.id}` });
        void victim.stop("SIGKILL");
      }
    });
    runs.push(summarize(`SIGKILL of one of ${stack.servers.length} servers`, k));
    await victim.start();
    await waitAllReady(stack.servers);

    let rolling: Promise<void> | undefined;
    const r = await withLoad(stack, { ...o, seconds: o.rollingSeconds }, (ms, events) => {
      if (rolling === undefined && ms >= 1000) {
        const t0 = performance.now() - ms;
        rolling = (async () => {
          for (const s of stack.servers) {
            events.push({ at_ms: Math.round(performance.now() - t0), what: `SIGTERM ${s.id}` });
            await s.stop("SIGTERM");
            await s.start();
            await waitAllReady(stack.servers);
          }
        })();
      }
    });
    await rolling;
    runs.push(summarize(`rolling restart of ${stack.servers.length} servers`, r));
  } finally {
    await stack.stop();
  }
  return runs;
}
