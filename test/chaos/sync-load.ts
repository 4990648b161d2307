import { errorName } from "../../src/protocol/item-errors.js";
import type { ClusterView } from "../../src/protocol/messages.js";
import type { RateLimiterRpc } from "../../src/protocol/rpc.js";
import { ownerIn } from "../../src/testkit/cluster-view.js";
import { InvariantChecker } from "../../src/testkit/invariants.js";
import { sleep, Tally } from "./link-harness.js";

/** `perOwner[id]` keys owned by each member id in `view`, named `${prefix}${i}`. */
export function keysOwnedBy(view: ClusterView, perOwner: Record<string, number>, prefix: string): string[] {
  const want = { ...perOwner };
  const keys: string[] = [];
  const total = Object.values(want).reduce((a, b) => a + b, 0);
  for (let i = 0; keys.length < total && i < 100_000; i++) {
    const key = `${prefix}${i}`;
    const owner = ownerIn(view, key);
    if ((want[owner] ?? 0) > 0) {
      want[owner]!--;
      keys.push(key);
    }
  }
  return keys;
}

export interface SyncLoadOptions {
  keys: readonly string[];
  /** Callers to send through, round robin; a function so the list can change during the run. */
  rpcs: () => readonly RateLimiterRpc[];
  limit: number;
  windowMs: number;
  tickMs: number;
  loadMs: number;
  deadlineMs?: number;
  maxInFlight?: number;
  /** Called every tick with the elapsed time: the scenario's timeline. */
  onTick?: (elapsedMs: number) => void | Promise<void>;
}

export interface SyncLoadResult {
  checker: InvariantChecker;
  errors: Tally;
  t0: number;
  sent: number;
  skipped: number;
  /**
   * Units the owner counted beyond the admitted answers, in windows without an error for the key:
   * per key and window (by the server's own window, from resetMs), the highest count an answer
   * showed (limit - remaining) minus the admitted answers. A call charged twice shows here.
   */
  doubled: number;
  doubledWindows: string[];
}

/**
 * Paced sync `Check` load: one call per key per tick, round robin over the callers, every answer
 * recorded in an InvariantChecker in the server's window that decided it (from the answer's resetMs;
 * at the answer when it carries none).
 */
export async function syncLoad(o: SyncLoadOptions): Promise<SyncLoadResult> {
  const checker = new InvariantChecker(() => ({ limit: o.limit, windowMs: o.windowMs }));
  const errors = new Tally();
  const byWindow = new Map<string, { admitted: number; maxCount: number; errors: number }>();
  const win = (key: string, start: number) => {
    const id = `${key} ${start}`;
    let w = byWindow.get(id);
    if (!w) {
      w = { admitted: 0, maxCount: 0, errors: 0 };
      byWindow.set(id, w);
    }
    return w;
  };
  const pending = new Set<Promise<void>>();
  let next = 0;
  let sent = 0;
  let skipped = 0;
  const t0 = Date.now();
  for (let tick = 0; tick * o.tickMs < o.loadMs; tick++) {
    await o.onTick?.(Date.now() - t0);
    const rpcs = o.rpcs();
    for (const key of o.keys) {
      if (pending.size >= (o.maxInFlight ?? 200)) {
        skipped++;
        continue;
      }
      const rpc = rpcs[next++ % rpcs.length]!;
      sent++;
      const p = rpc
        .check(
          { items: [{ key, cost: 1 }], atomic: false, generation: 0 },
          { deadlineMs: o.deadlineMs ?? 1000 },
        )
        .then(
          (r) => {
            const at = Date.now();
            const res = r.results[0]!;
            const start = at - (at % o.windowMs);
            if (res.error) {
              errors.bump(errorName(res.error.code));
              win(key, start).errors++;
            }
            const allowed = res.allowed === true && !res.error;
            if (!res.error && res.resetMs !== undefined && res.remaining !== undefined) {
              // The window that decided it (same host clock): the one ending resetMs after the
              // answer. Attributing by answer time instead would move calls answered late (a
              // loaded machine, a forward retried) into the next window and show false excess.
              const end = Math.round((at + res.resetMs) / o.windowMs) * o.windowMs;
              const w = win(key, end - o.windowMs);
              if (allowed) w.admitted++;
              w.maxCount = Math.max(w.maxCount, o.limit - res.remaining);
              checker.record({ key, at: end - o.windowMs, cost: 1, allowed });
            } else {
              checker.record({ key, at, cost: 1, allowed });
            }
          },
          (err: { code?: number }) => {
            const at = Date.now();
            errors.bump(`grpc:${err.code ?? "?"}`);
            // Unknown: maybe counted. Every window it may belong to is marked.
            win(key, at - (at % o.windowMs)).errors++;
            win(key, at - (at % o.windowMs) - o.windowMs).errors++;
            checker.record({ key, at, cost: 1, allowed: false });
          },
        );
      const tracked = p.finally(() => pending.delete(tracked));
      pending.add(tracked);
    }
    const wait = t0 + (tick + 1) * o.tickMs - Date.now();
    if (wait > 0) await sleep(wait);
    if (Date.now() - t0 > o.loadMs + 3000) break;
  }
  await Promise.all(pending);
  let doubled = 0;
  const doubledWindows: string[] = [];
  for (const [id, w] of byWindow) {
    if (w.errors > 0 || w.maxCount <= w.admitted) continue;
    doubled += w.maxCount - w.admitted;
    doubledWindows.push(`${id}: counted ${w.maxCount}, admitted answers ${w.admitted}`);
  }
  return { checker, errors, t0, sent, skipped, doubled, doubledWindows };
}
