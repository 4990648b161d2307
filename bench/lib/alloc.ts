import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import path from "node:path";
import { OUT_DIR } from "./common.js";
import { type HeapSummary, summarizeHeapProfile } from "./cpuprofile.js";

/**
 * Bytes allocated per operation: `run` (which returns how many operations it did) under V8's
 * sampling heap profiler keeping every sample, the young objects a scavenge frees too (one
 * sample per 512 bytes on average), and the allocating stacks that account for them.
 */
export async function allocatedPer(
  name: string,
  run: () => number,
): Promise<{ bytesPerOp: number; ops: number; heap: HeapSummary }> {
  const session = new Session();
  session.connect();
  await session.post("HeapProfiler.enable");
  await session.post("HeapProfiler.startSampling", {
    samplingInterval: 512,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  const ops = run();
  const { profile } = await session.post("HeapProfiler.stopSampling");
  session.disconnect();
  mkdirSync(path.join(OUT_DIR, "prof"), { recursive: true });
  const file = path.join(OUT_DIR, "prof", `${name}-${Date.now()}.heapprofile`);
  writeFileSync(file, JSON.stringify(profile));
  const heap = summarizeHeapProfile(file, 1, 20);
  return { bytesPerOp: (heap.sampledMB * 2 ** 20) / ops, ops, heap };
}
