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

/**
 * Scenario A over real processes on loopback: gateways (load threads, one sending half) offer
 * 2x a 1000/s token bucket to a real cluster; admitted over the limit, after a 2 s warm-up.
 */
export async function accuracyReal(o: { servers: number; gateways: number; seconds: number; stack?: Stack }) {
  const stack = o.stack ?? (await startStack({ servers: o.servers }));
  try {
    const gateways = Math.max(2, o.gateways);
    const r = await runLoad({
      threads: gateways,
      ratePerSec: 2000,
      seconds: o.seconds,
      keys: 1,
      warmupSeconds: 0,
      shareFor: (i) => (i === 0 ? 0.5 : 0.5 / (gateways - 1)),
      specFor: (i) => ({
        kind: "shardlimit-batched",
        servers: stack.addresses(),
        clientId: `acc-${i}`,
        key: "bench/acc=a",
      }),
    });
    const perS = perSecond(r.admittedPer100ms);
    const measuredS = perS.slice(2);
    const admitted = measuredS.reduce((a, b) => a + b, 0);
    const right = 1000 * measuredS.length;
    const ratio = right > 0 ? admitted / right : 0;
    return {
      name: `A. steady overload over loopback: ${gateways} gateways, 2000/s offered, one sending half, ${o.servers} servers`,
      limit: 1000,
      offered: r.sent,
      admitted,
      ratio: Math.round(ratio * 10_000) / 10_000,
      pass: ratio >= 0.99 && ratio <= 1.02,
      admitted_per_s: perS,
    } satisfies RealAccuracyResult;
  } finally {
    if (!o.stack) await stack.stop();
  }
}
