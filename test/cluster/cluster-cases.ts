import { expect } from "vitest";
import { waitFor } from "../../src/testkit/wait.js";
import { clearWindowSeconds } from "../../src/testkit/window.js";
import type { ClusterHarness } from "./cluster-harness.js";

/**
 * Cluster behaviours asserted the same way on a plaintext cluster (cluster.test.ts) and on one
 * with TLS on every link (cluster-tls.test.ts): each takes a started, settled three-server
 * harness whose config is CLUSTER_CONFIG.
 */

/** Clear of a window boundary for the whole file (fixed windows restart at it: see clearWindowSeconds). */
const WINDOW = `${clearWindowSeconds(15 * 60_000)}s`;

export const CLUSTER_CONFIG = `
domain: api
descriptors:
  - key: k
    rate_limit: { window: ${WINDOW}, requests_per_unit: 1000000 }
  - key: group
    shard_key: true
    rate_limit: { window: ${WINDOW}, requests_per_unit: 100 }
    descriptors:
      - key: tenant
        rate_limit: { window: ${WINDOW}, requests_per_unit: 60 }
`;

export const CLUSTER_KEYS = Array.from({ length: 60 }, (_, i) => `api/k=key-${i}`);

/** Remaining of `key` after a charge of `cost` through server `via`. */
export async function charge(h: ClusterHarness, via: string, key: string, cost: number): Promise<number> {
  return (await h.check(via, key, cost)).remaining ?? 0;
}

/** Fresh `keys` (limit 1,000,000) charged through every server in turn: one counter per key. */
export async function countsExactlyAcross(h: ClusterHarness, keys: readonly string[]): Promise<void> {
  for (let round = 1; round <= 3; round++) {
    for (const [i, key] of keys.entries()) {
      const via = h.servers[(i + round) % 3]!.id;
      expect(await charge(h, via, key, 2)).toBe(1_000_000 - 2 * round);
    }
  }
}

/** SIGTERM of s2 hands its counts over (no key regains quota); it comes back and gets slices again. */
export async function sigtermMovesCounts(h: ClusterHarness, keys: readonly string[]): Promise<void> {
  const before = new Map<string, number>();
  for (const key of keys) before.set(key, await charge(h, "s1", key, 1));
  const view = await h.view("s1");
  const leaving = "s2";
  const itsKeys = keys.filter((k) => h.ownerIn(view, k) === leaving);
  expect(itsKeys.length).toBeGreaterThan(0);
  const t0 = Date.now();
  await h.kill(leaving, "SIGTERM");
  const drainMs = Date.now() - t0;
  expect(h.server(leaving).child!.child.exitCode).toBe(0);
  for (const key of keys) expect(await charge(h, "s3", key, 1)).toBe(before.get(key)! - 1);
  const after = await h.view("s3");
  for (const key of itsKeys) expect(h.ownerIn(after, key)).not.toBe(leaving);
  console.log(`SIGTERM drain of ${leaving}: ${drainMs} ms to exit, ${itsKeys.length} of its keys checked`);
  // It comes back and gets slices (and their counts) again.
  await h.start(leaving);
  await h.settled();
  for (const key of keys) expect(await charge(h, leaving, key, 1)).toBe(before.get(key)! - 2);
}

/** After SIGKILL of s3 the others serve every key within 10 s; it then rejoins. */
export async function sigkillHeals(h: ClusterHarness, keys: readonly string[]): Promise<void> {
  const victim = "s3";
  await h.kill(victim, "SIGKILL");
  const t0 = Date.now();
  await waitFor(
    "every key served by the survivors",
    async () => {
      for (const key of keys) {
        const r = await h.server("s1").rpc.check({ items: [{ key, cost: 0 }] }, { deadlineMs: 1000 });
        if (r.results[0]!.error) return false;
      }
      return true;
    },
    10_000,
    50,
  );
  const healedMs = Date.now() - t0;
  console.log(`SIGKILL of ${victim}: every key served again after ${healedMs} ms (lease TTL 2 s)`);
  expect(healedMs).toBeLessThan(10_000);
  const v = await h.view("s1");
  expect(v.members.map((m) => m.id).sort()).toEqual(["s1", "s2"]);
  await h.start(victim);
  await h.settled();
}
