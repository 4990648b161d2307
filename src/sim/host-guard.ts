import { GatewayLimiter } from "../client/gateway-limiter.js";
import type { ClientTransport } from "../client/transport.js";
import { compileSources } from "../config/load.js";
import { PRIORITIES, type Priority } from "../config/types.js";
import { ManualClock } from "../core/clock.js";
import { seededRandom } from "../core/random.js";
import type { ScenarioResult } from "./accuracy.js";
import { SimNetwork } from "./network.js";
import { SimCluster } from "./sim-cluster.js";
import { T0 } from "./simulation.js";

/**
 * Scenario P (host guard, issue 14): one gateway host that can serve 1000 requests a second,
 * whose own load (requests served over the last 500 ms, against that capacity) is the guard's
 * gauge, threshold 0.9 (hysteresis 0.1, sampled every 100 ms). Four priority classes offer a quarter each: 600/s for 10 s, then 1600/s
 * for 20 s, then 600/s again. The key's limit (100000/s, on a simulated cluster the gateway
 * reports to) never binds: whatever is rejected, the host guard rejected. Every transport call
 * made while a decision runs is counted: there must be none.
 */

const CAPACITY = 1000;
const THRESHOLD = 0.9;
const WINDOW_MS = 500;
const BUCKET_MS = 100;
const KEY = "sim/k=v";
const YAML = `domain: sim
descriptors:
  - key: k
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100000 }
`;

/** Calls made through a transport, and those made while `deciding` was set. */
export interface CallCounts {
  deciding: boolean;
  calls: number;
  callsWhileDeciding: number;
}

/**
 * `inner` with every call counted: set `counts.deciding` around a decision, and a call made then
 * is counted in `callsWhileDeciding` (the host guard's "no network call on the path").
 */
export function countingTransport(inner: ClientTransport): {
  transport: ClientTransport;
  counts: CallCounts;
} {
  const counts: CallCounts = { deciding: false, calls: 0, callsWhileDeciding: 0 };
  const transport = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        counts.calls++;
        if (counts.deciding) counts.callsWhileDeciding++;
        return v.apply(target, args);
      };
    },
  });
  return { transport, counts };
}

export interface HostGuardSpec {
  seed: number;
  /** Offered requests per second at `t` s since traffic started. */
  offered?: (t: number) => number;
  seconds?: number;
}

export interface HostGuardRun {
  /** Per 100 ms bucket and class: offered and admitted. */
  offered: number[][];
  admitted: number[][];
  /** The guard's level at the end of each bucket. */
  level: number[];
  /** Transport calls made while a decision ran, and in all. */
  callsOnPath: number;
  calls: number;
  wallMs: number;
}

/** The phases of P: 600/s, then 1600/s from 10 s to 30 s, then 600/s. */
export const overloadPhases = (t: number): number => (t >= 10 && t < 30 ? 1600 : 600);

export function simulateHostGuard(spec: HostGuardSpec): HostGuardRun {
  const started = performance.now();
  const seconds = spec.seconds ?? 45;
  const offeredAt = spec.offered ?? overloadPhases;
  const random = seededRandom(spec.seed);
  const clock = new ManualClock(T0 - 1000);
  const config = compileSources([{ file: "sim.yaml", text: YAML }]);
  const cluster = new SimCluster(clock, config, 3);
  const net = new SimNetwork(clock, cluster, { delayMs: 0.25, jitterMs: 0.25, loss: 0, random });
  // Every call of the transport is counted; those made inside `decide` are the failure.
  const { transport, counts } = countingTransport(net);

  const buckets = Math.ceil((seconds * 1000) / BUCKET_MS);
  const offered = PRIORITIES.map(() => new Array<number>(buckets).fill(0));
  const admitted = PRIORITIES.map(() => new Array<number>(buckets).fill(0));
  const level = new Array<number>(buckets).fill(0);
  /** Requests served in each bucket: the host's load over the last `WINDOW_MS`. */
  const served = new Array<number>(buckets).fill(0);
  const bucketAt = (now: number) => Math.floor((now - T0) / BUCKET_MS);
  const load = (): number => {
    const b = bucketAt(clock.now());
    let n = 0;
    for (let i = Math.max(0, b - WINDOW_MS / BUCKET_MS); i < b; i++) n += served[i]!;
    return n / ((CAPACITY * WINDOW_MS) / 1000);
  };

  const gw = new GatewayLimiter({
    servers: cluster.servers.map((s) => s.member.address),
    clientId: "host",
    instanceId: "p",
    transport,
    clock,
    random,
    // A class a second up (10 samples), as the defaults (0.25 every 250 ms); down as fast.
    hostGuard: {
      gauges: [{ name: "host_load", read: load, threshold: THRESHOLD }],
      sampleMs: BUCKET_MS,
      riseStep: 0.1,
      fallStep: 0.1,
    },
  });
  gw.start();
  const end = T0 + seconds * 1000;
  PRIORITIES.forEach((priority: Priority, rank) => {
    const arrive = (): void => {
      const now = clock.now();
      const b = bucketAt(now);
      if (b >= 0 && b < buckets) {
        offered[rank]![b]!++;
        counts.deciding = true;
        const ok = gw.decide(KEY, 1, { priority });
        counts.deciding = false;
        if (ok) {
          admitted[rank]![b]!++;
          served[b]!++;
        }
      }
      const perS = offeredAt((now - T0) / 1000) / PRIORITIES.length;
      const next = (-Math.log(1 - random()) * 1000) / perS;
      if (now + next < end) clock.after(next, arrive);
    };
    clock.after(1000, arrive);
  });
  for (let b = 0; b < buckets; b++) {
    clock.runUntil(T0 + (b + 1) * BUCKET_MS);
    level[b] = gw.guard!.level;
  }
  gw.close();
  const { callsWhileDeciding: callsOnPath, calls } = counts;
  return { offered, admitted, level, callsOnPath, calls, wallMs: performance.now() - started };
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

export interface HostGuardScenario {
  name: string;
  run(): ScenarioResult;
}

/** Scenario P, as `shardlimit bench accuracy` reports it. */
export function hostGuardScenarios(_quick: boolean, seed: number): HostGuardScenario[] {
  const name =
    "P. host guard: a host of 1000/s offered 600/s, then 1600/s for 20 s, then 600/s, in four priority classes; its load gauge sheds at 0.9";
  return [
    {
      name,
      run: () => {
        const r = simulateHostGuard({ seed });
        const perS = 1000 / BUCKET_MS;
        const sum = (xs: number[], from: number, to: number) =>
          xs.slice(from * perS, to * perS).reduce((a, b) => a + b, 0);
        const share = (rank: number, from: number, to: number) =>
          sum(r.admitted[rank]!, from, to) / Math.max(1, sum(r.offered[rank]!, from, to));
        // Overload from 10 s: measured from 12 s, once the guard has moved.
        const during = PRIORITIES.map((_, rank) => round(share(rank, 12, 30)));
        const before = PRIORITIES.map((_, rank) => round(share(rank, 2, 10)));
        const after = PRIORITIES.map((_, rank) => round(share(rank, 35, 45)));
        const served = PRIORITIES.reduce((s, _, rank) => s + sum(r.admitted[rank]!, 12, 30), 0) / 18;
        const utilisation = served / CAPACITY;
        // Recovery: the first bucket after the load falls (30 s) from which nothing is shed.
        const fall = 30 * perS;
        let clear = r.level.length;
        for (let b = r.level.length - 1; b >= fall && r.level[b] === 0; b--) clear = b;
        const recoveryS = (clear + 1 - fall) / perS;
        const ordered = during.every((x, i) => i === 0 || x >= during[i - 1]!);
        const pass =
          ordered &&
          during[0]! <= 0.05 &&
          during[3]! >= 0.999 &&
          before.every((x) => x === 1) &&
          after.every((x) => x === 1) &&
          utilisation >= 0.8 &&
          utilisation <= 0.95 &&
          recoveryS <= 5 &&
          r.callsOnPath === 0 &&
          r.calls > 0;
        const offered = PRIORITIES.reduce((s, _, rank) => s + sum(r.offered[rank]!, 12, 30), 0);
        return {
          name,
          limit: CAPACITY,
          offered,
          admitted: Math.round(served * 18),
          ratio: round(utilisation),
          pass,
          target:
            "12-30 s: admitted share rising with class, low <= 0.05, critical >= 0.999, host load [0.8, 0.95] (ratio); all admitted before and from 35 s; nothing shed within 5 s of the fall; 0 network calls while deciding",
          from_s: 12,
          to_s: 30,
          ideal_admitted: Math.min(offered, CAPACITY * THRESHOLD * 18),
          detail: {
            admitted_share_12_30s_low_normal_high_critical: during,
            admitted_share_2_10s: before,
            admitted_share_35_45s: after,
            recovery_s: recoveryS,
            network_calls_while_deciding: r.callsOnPath,
            network_calls_in_all: r.calls,
            max_level: Math.max(...r.level),
          },
          sim_wall_ms: Math.round(r.wallMs),
          reports: 0,
          failed_reports: 0,
        };
      },
    },
  ];
}
