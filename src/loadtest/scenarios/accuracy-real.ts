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
