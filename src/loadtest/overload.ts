import { createLimiter } from "../client/create.js";
import { GrpcTransport } from "../client/grpc-transport.js";
import { PRIORITIES } from "../config/types.js";
import { seededRandom } from "../core/random.js";
import { countingTransport } from "../sim/host-guard.js";
import { serverProcess, writeConfig } from "../testkit/serve.js";

/**
 * `shardlimit bench overload`: issue 14's overload protection with real processes, one named
 * scenario each (`--only NAME`), so scenarios written apart merge as entries of `OVERLOAD`.
 *
 * `host-guard`: a gateway process whose requests cost real CPU (each admitted request spins for
 * `workMs` of CPU time, 0.5 ms by default, on its one event loop), offered 400/s, then 2000/s
 * (a whole core's worth), then 400/s again in four equal priority classes by an open loop, against a
 * `shardlimit serve` child whose limit never binds. Run twice: with the host guard on this
 * process's CPU (0.8 cores) and event-loop delay (50 ms) and without it. Without it the event loop
 * falls behind the arrivals and every class waits; with it low is shed first and the rest is served
 * sooner. On a shared machine the capacity is what the process gets, so the figures before and
 * after the overload are reported, not bounded.
 */

export interface OverloadOptions {
  /** Seconds of each phase: under, over, under again (default 5, 10, 7). */
  phases?: readonly [number, number, number];
  /** CPU each admitted request spins for, ms (default 0.5). */
  workMs?: number;
  seed?: number;
}

export interface GuardRun {
  guard: boolean;
  /** Admitted share of each class (low .. critical) in the overload phase from 2 s in. */
  admittedOverload: number[];
  /** Admitted share of all classes before and after it (from 2 s into the last phase). */
  admittedBefore: number;
  admittedAfter: number;
  /** This process's CPU in cores over the overload phase from 2 s in. */
  cpuCores: number;
  /** Arrival to decision, ms, 99th percentile per phase (how far the loop fell behind). */
  delayP99Ms: [number, number, number];
  /** Seconds from the end of the overload until the guard sheds nothing (0: none ever, or no guard). */
  recoveryS: number;
  /** Transport calls made while deciding, and in all. */
  callsWhileDeciding: number;
  calls: number;
  wallS: number;
}

export interface OverloadResult {
  name: string;
  pass: boolean;
  target: string;
  runs: GuardRun[];
}

const YAML = `domain: bench
descriptors:
  - key: host
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000000 }
`;

const RATES = [400, 2000, 400];
const TICK_MS = 5;
const SLICE_MS = 20;

/** The request's work: `ms` of this process's CPU time (not wall time: the host may be shared). */
function spin(ms: number): void {
  const from = process.cpuUsage();
  for (;;) {
    const u = process.cpuUsage(from);
    if (u.user + u.system >= ms * 1000) return;
  }
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** One run of the host-guard scenario on a server at `address`. */
async function guardRun(address: string, guard: boolean, o: Required<OverloadOptions>): Promise<GuardRun> {
  const random = seededRandom(o.seed);
  const { transport, counts } = countingTransport(new GrpcTransport());
  const limiter = await createLimiter({
    servers: [address],
    clientId: guard ? "guarded" : "unguarded",
    transport,
    // CPU past 0.8 cores, or the event loop 50 ms late (p99 of a sample): whichever says first
    // that the host is short, its own work or a neighbour's.
    ...(guard
      ? { hostGuard: { cpu: { threshold: 0.8 }, eventLoopDelay: { thresholdMs: 50 }, sampleMs: 250 } }
      : {}),
  });
  const [p0, p1, p2] = o.phases;
  const bounds = [p0, p0 + p1, p0 + p1 + p2].map((s) => s * 1000);
  const phaseOf = (t: number) => (t < bounds[0]! ? 0 : t < bounds[1]! ? 1 : 2);
  const offered = [0, 0, 0].map(() => PRIORITIES.map(() => 0));
  const admitted = [0, 0, 0].map(() => PRIORITIES.map(() => 0));
  const delays: number[][] = [[], [], []];
  const levels: { t: number; level: number }[] = [];
  let cpuFrom: NodeJS.CpuUsage | undefined;
  let cpuAt = 0;
  let cpuCores = 0;
  const started = performance.now();
  // The next arrival of each class, ms since the start (Poisson, a quarter of the rate each).
  const next = PRIORITIES.map(() => 0);
  const gap = (t: number) => (-Math.log(1 - random()) * 1000) / (RATES[phaseOf(t)]! / PRIORITIES.length);
  for (let c = 0; c < PRIORITIES.length; c++) next[c] = gap(0);

  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now() - started;
      // Every arrival due by now, oldest first, as an open loop would have sent them; at most
      // SLICE_MS of it in one turn, so timers (the guard's samples, the reports) get their turn
      // as they would between a server's requests.
      let backlog = false;
      for (;;) {
        if (performance.now() - started - now > SLICE_MS) {
          backlog = true;
          break;
        }
        let c = 0;
        for (let k = 1; k < next.length; k++) if (next[k]! < next[c]!) c = k;
        const due = next[c]!;
        if (due > now || due >= bounds[2]!) break;
        next[c] = due + gap(due);
        const ph = phaseOf(due);
        const measured = due - (ph === 0 ? 0 : bounds[ph - 1]!) >= 2000;
        counts.deciding = true;
        const ok = limiter.decide("bench/host=h", 1, { priority: PRIORITIES[c]! });
        counts.deciding = false;
        if (measured) {
          offered[ph]![c]!++;
          if (ok) admitted[ph]![c]!++;
        }
        delays[ph]!.push(performance.now() - started - due);
        if (ok) spin(o.workMs);
      }
      const t = performance.now() - started;
      if (limiter.guard) levels.push({ t, level: limiter.guard.level });
      if (cpuFrom === undefined && t >= bounds[0]! + 2000) {
        cpuFrom = process.cpuUsage();
        cpuAt = t;
      } else if (cpuFrom !== undefined && cpuCores === 0 && t >= bounds[1]!) {
        const u = process.cpuUsage(cpuFrom);
        cpuCores = (u.user + u.system) / 1000 / (t - cpuAt);
      }
      if (Math.min(...next) >= bounds[2]!) resolve();
      else setTimeout(tick, backlog ? 0 : TICK_MS);
    };
    setTimeout(tick, TICK_MS);
  });
  limiter.close();
  const share = (ph: number, c: number) => admitted[ph]![c]! / Math.max(1, offered[ph]![c]!);
  const all = (ph: number) =>
    admitted[ph]!.reduce((a, b) => a + b, 0) /
    Math.max(
      1,
      offered[ph]!.reduce((a, b) => a + b, 0),
    );
  let recoveryS = 0;
  const last = levels.filter((l) => l.level > 0).at(-1);
  if (last !== undefined && last.t >= bounds[1]!) recoveryS = (last.t - bounds[1]!) / 1000;
  const round = (x: number, d = 4) => Math.round(x * 10 ** d) / 10 ** d;
  return {
    guard,
    admittedOverload: PRIORITIES.map((_, c) => round(share(1, c))),
    admittedBefore: round(all(0)),
    admittedAfter: round(all(2)),
    cpuCores: round(cpuCores, 3),
    delayP99Ms: [0, 1, 2].map((ph) => round(percentile(delays[ph]!, 99), 1)) as [number, number, number],
    recoveryS: round(recoveryS, 2),
    callsWhileDeciding: counts.callsWhileDeciding,
    calls: counts.calls,
    wallS: round((performance.now() - started) / 1000, 1),
  };
}

export async function runHostGuardOverload(opts: OverloadOptions = {}): Promise<OverloadResult> {
  const o: Required<OverloadOptions> = {
    phases: opts.phases ?? [5, 10, 7],
    workMs: opts.workMs ?? 0.5,
    seed: opts.seed ?? 1,
  };
  const server = await serverProcess({ id: "overload", configPath: writeConfig(YAML), logLevel: "info" });
  try {
    await server.start();
    const guarded = await guardRun(server.address, true, o);
    const unguarded = await guardRun(server.address, false, o);
    const s = guarded.admittedOverload;
    const ordered = s.every((x, i) => i === 0 || x >= s[i - 1]!);
    const pass =
      ordered &&
      s[0]! <= 0.1 &&
      s[3]! >= 0.99 &&
      guarded.delayP99Ms[1] < unguarded.delayP99Ms[1] &&
      guarded.callsWhileDeciding === 0 &&
      guarded.calls > 0;
    return {
      name: "host-guard: a gateway process doing 0.5 ms of CPU per request, offered 400/s, 2000/s, 400/s in four classes, guard on its CPU (0.8 cores) and event-loop delay (50 ms), against no guard",
      pass,
      target:
        "guarded, overload from 2 s in: admitted share rising with class, low <= 0.1, critical >= 0.99, arrival-to-decision p99 below the unguarded run's; 0 transport calls while deciding",
      runs: [guarded, unguarded],
    };
  } finally {
    await server.stop();
  }
}

/** The named scenarios of `shardlimit bench overload`. */
export const OVERLOAD: Record<string, (opts: OverloadOptions) => Promise<OverloadResult>> = {
  "host-guard": runHostGuardOverload,
};
