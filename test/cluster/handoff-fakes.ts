import type { CounterStore } from "../../src/cluster/handoff.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { keyPoint } from "../../src/keyspace/hash.js";

/** A sliding-window counter's snapshot with `clients` reporting gateways (~40 bytes apiece). */
export function snapshot(key: string, clients = 1): CounterSnapshot {
  return {
    key,
    shard: key,
    algorithm: "sliding_window",
    tRelMs: -10,
    x: 5,
    y: 7,
    expiresInMs: 60_000,
    leases: [],
    clients: Array.from({ length: clients }, (_, i) => ({
      id: `gateway-${i}`,
      demand: 0.5,
      held: 0,
      seenMsAgo: 10,
    })),
  };
}

/**
 * A store whose ranges hold `counters` (all handed out in the first take) and which records
 * what is put into it.
 */
export function listStore(
  counters: readonly CounterSnapshot[] = [],
  put: CounterSnapshot[] = [],
): CounterStore {
  return {
    takeRanges: () => {
      let taken = false;
      return {
        next: () => {
          const out = taken ? [] : [...counters];
          taken = true;
          return { counters: out, more: false };
        },
      };
    },
    putCounters: (s) => {
      put.push(...s);
      return s.length;
    },
  };
}

/** Whether `c`'s key falls in one of `ranges`. */
export function inRanges(c: CounterSnapshot, ranges: readonly { start: number; end: number }[]): boolean {
  const p = keyPoint(c.key);
  return ranges.some((r) => p >= r.start && p < r.end);
}

/** A `takeRanges` that hands out, all in its first batch, what `pick` chooses for the ranges. */
export function takeOnce(
  pick: (ranges: readonly { start: number; end: number }[]) => CounterSnapshot[],
): CounterStore["takeRanges"] {
  return (ranges) => {
    let done = false;
    return {
      next: () => {
        if (done) return { counters: [], more: false };
        done = true;
        return { counters: pick(ranges), more: false };
      },
    };
  };
}
