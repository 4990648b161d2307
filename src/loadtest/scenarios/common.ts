import { CpuMeter } from "../cpu.js";
import type { LoadResult } from "../load.js";

/**
 * A load run with the CPU of every process in it measured from the moment load starts. Readings
 * every 100 ms keep what a process used before it was killed or restarted.
 */
export async function measured(
  pids: () => number[],
  load: (onStart: () => void) => Promise<LoadResult>,
): Promise<{ load: LoadResult; cpuSeconds: number; wallSeconds: number; byPid: Record<number, number> }> {
  const meter = new CpuMeter(pids);
  let timer: NodeJS.Timeout | undefined;
  const r = await load(() => {
    meter.start();
    timer = setInterval(() => meter.sample(), 100);
  }).finally(() => clearInterval(timer));
  const cpu = meter.stop();
  return { load: r, ...cpu };
}

export const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Sums 100 ms buckets into per-second rates. */
export function perSecond(per100ms: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i + 10 <= per100ms.length; i += 10)
    out.push(per100ms.slice(i, i + 10).reduce((a, b) => a + b, 0));
  return out;
}
