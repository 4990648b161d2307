import { keyPoint } from "../../keyspace/hash.js";
import { Routing } from "../../keyspace/routing.js";
import { connect } from "../../protocol/rpc.js";
import { runLoad } from "../load.js";
import { type Stack, startStack } from "../stack.js";
import { perSecond } from "./common.js";

export interface RealAccuracyResult {
  name: string;
  limit: number;
  offered: number;
  admitted: number;
  ratio: number;
  pass: boolean;
  /** Admitted per second over the run, against the limit, for the chart. */
  admitted_per_s: number[];
}

interface LoopbackCase {
  name: string;
  key: string;
  limit: number;
  total: number;
  /** Per load thread: its share of `total` and how many gateways it hosts. */
  threads: { share: number; gateways: number }[];
  /** Per load thread: a stepping rate instead of a share of `total` (E: the load moves). */
  steps?: (thread: number) => { everyMs: number; rates: number[] };
  /** Under the limit: the ratio is admitted over offered. */
  under: boolean;
  /** Each arrival is a burst of this many requests (D). */
  burst?: number;
}

/** The client issue's single-key scenarios that fit a few load threads: A, B and C. */
export function loopbackCases(gateways: number): LoopbackCase[] {
  const g = Math.max(2, gateways);
  const skewed = [
    { share: 0.5, gateways: 1 },
    ...Array.from({ length: g - 1 }, () => ({ share: 0.5 / (g - 1), gateways: 1 })),
  ];
  return [
    {
      name: `A. steady overload over loopback: ${g} gateways, 2000/s offered, one sending half`,
      key: "bench/acc=a",
      limit: 1000,
      total: 2000,
      threads: skewed,
      under: false,
    },
    {
      name: `B. under the limit over loopback: ${g} gateways, 900/s offered, one sending half`,
      key: "bench/acc=b",
      limit: 1000,
      total: 900,
      threads: skewed,
      under: true,
    },
    {
      name: "C. Uber's fairness case over loopback: one gateway at 500/s, nine at 10/s",
      key: "bench/acc=c",
      limit: 1000,
      total: 590,
      threads: [
        { share: 500 / 590, gateways: 1 },
        { share: 90 / 590, gateways: 9 },
      ],
      under: true,
    },
    {
      name: `E. load shift over loopback: ${g} gateways, 2000/s, the heavy sender changes every 5 s`,
      key: "bench/acc=e",
      limit: 1000,
      total: 2000,
      threads: Array.from({ length: g }, () => ({ share: 1 / g, gateways: 1 })),
      steps: (i) => ({
        everyMs: 5000,
        rates: Array.from({ length: g }, (_, k) => (k === i ? 1800 : 200 / (g - 1))),
      }),
      under: false,
    },
    {
      name: "D. fragmentation over loopback: limit 100/s over 500 gateways (2 threads), bursts of 3 at random times, 80/s in all",
      key: "bench/frag=d",
      limit: 100,
      total: 80 / 3,
      threads: [
        { share: 0.5, gateways: 250 },
        { share: 0.5, gateways: 250 },
      ],
      burst: 3,
      under: true,
    },
  ];
}

/**
 * A client-issue scenario over real processes on loopback: gateways (in load threads) offer a
 * 1000/s token bucket to a real cluster; admitted over the most that could rightly be admitted,
 * after a 2 s warm-up.
 */
export async function accuracyCase(
  c: LoopbackCase,
  o: { servers: number; seconds: number; stack?: Stack },
): Promise<RealAccuracyResult> {
  const stack = o.stack ?? (await startStack({ servers: o.servers }));
  try {
    const r = await runLoad({
      threads: c.threads.length,
      ratePerSec: c.total,
      seconds: o.seconds,
      keys: 1,
      warmupSeconds: 0,
      shareFor: (i) => c.threads[i]!.share,
      ...(c.steps ? { stepsFor: c.steps } : {}),
      specFor: (i) => ({
        kind: "shardlimit-batched",
        servers: stack.addresses(),
        clientId: `acc-${c.key}-${i}`,
        key: c.key,
        gateways: c.threads[i]!.gateways,
        ...(c.burst ? { burst: c.burst } : {}),
      }),
    });
    const perS = perSecond(r.admittedPer100ms);
    const offeredPerS = perSecond(r.offeredUnitsPer100ms);
    const admitted = perS.slice(2).reduce((a, b) => a + b, 0);
    const offered = offeredPerS.slice(2).reduce((a, b) => a + b, 0);
    const right = c.under ? offered : Math.min(offered, c.limit * perS.slice(2).length);
    const ratio = right > 0 ? admitted / right : 0;
    return {
      name: `${c.name}, ${stack.addresses().length} servers`,
      limit: c.limit,
      offered,
      admitted,
      ratio: Math.round(ratio * 10_000) / 10_000,
      pass: c.under ? ratio >= 0.999 : ratio >= 0.99 && ratio <= 1.02,
      admitted_per_s: perS,
    };
  } finally {
    if (!o.stack) await stack.stop();
  }
}

/**
 * F over real processes: gateways offer 2000/s to a 10,000-per-10 s fixed window; 3 s into a
 * window the key's owner is SIGKILLed. Its lease runs out (2 s), the slices move, the gateways
 * re-send their window totals to the new owner. Admitted in that window over the limit.
 */
export async function crashMidWindow(o: { gateways: number }): Promise<RealAccuracyResult> {
  const stack = await startStack({ servers: 3 });
  const key = "bench/win=f";
  try {
    const rpc = connect(stack.addresses()[0]!);
    const view = await rpc.getClusterView({}, { deadlineMs: 3000 });
    rpc.close();
    const routing = Routing.fromView(view, stack.addresses()[0]!);
    if (typeof routing === "string") throw new Error(routing);
    const ownerAddress = routing.ownerOf(keyPoint(key));
    const victim = stack.servers.find((s) => s.address === ownerAddress)!;
    const WINDOW = 10_000;
    // The window under test starts once the gateways are warm; the run covers it whole.
    const startWall = Date.now() + 300;
    const windowAt = Math.ceil((startWall + 1500) / WINDOW) * WINDOW;
    const seconds = (windowAt + WINDOW + 500 - startWall) / 1000;
    let t0 = 0;
    let killed = false;
    const gateways = Math.max(2, o.gateways);
    const r = await runLoad({
      threads: gateways,
      ratePerSec: 2000,
      seconds,
      keys: 1,
      warmupSeconds: 0,
      specFor: (i) => ({
        kind: "shardlimit-batched",
        servers: stack.addresses(),
        clientId: `accf-${i}`,
        key,
      }),
      onStart: () => {
        t0 = Date.now();
      },
      onTick: () => {
        if (!killed && Date.now() >= windowAt + 3000) {
          killed = true;
          void victim.stop("SIGKILL");
        }
      },
    });
    const from = Math.max(0, Math.round((windowAt - t0) / 100));
    const to = from + WINDOW / 100;
    const admitted = r.admittedPer100ms.slice(from, to).reduce((a, b) => a + b, 0);
    const offered = r.offeredUnitsPer100ms.slice(from, to).reduce((a, b) => a + b, 0);
    const ratio = admitted / Math.min(offered, 10_000);
    return {
      name: `F. owner SIGKILLed 3 s into a 10,000 per 10 s fixed window, ${gateways} gateways at 2000/s, 3 servers (lease 2 s)`,
      limit: 10_000,
      offered,
      admitted,
      ratio: Math.round(ratio * 10_000) / 10_000,
      pass: ratio >= 0.95 && ratio <= 1.05,
      admitted_per_s: perSecond(r.admittedPer100ms),
    };
  } finally {
    await stack.stop();
  }
}
