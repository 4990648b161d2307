import type { Counter } from "../core/counter.js";
import type { DecodedReport } from "../protocol/report-codec.js";
import { AT_HANDLE, ENTRY_NUMBERS } from "../protocol/report-codec.js";
import type { CachedKey, KeyResolver } from "./resolver.js";

/**
 * Reads the state of some of the keys a report names by handle, before they are counted: the
 * resolver's entry and what it resolved to, the counter, its gateways' table and the reporting
 * gateway's share (in the table's Map when several gateways report the key), and their numbers.
 * Counting a key follows a chain of dependent loads (entry -> counter -> table -> gateway share,
 * and each number in its own heap box), and with keys in an order other than the one their
 * counters were made in, each link is a cache miss. The chains of different keys are
 * independent, so in this loop, which does nothing else, the CPU overlaps their misses, where the
 * counting, with real work between them, waits on each in turn. Changes nothing but `sink`.
 *
 * Entries `from` to `to` (exclusive); the handler reads READ_AHEAD_ENTRIES at a time, so what was
 * read is still in the cache (and the TLB) when it is counted: a whole 500-entry report read
 * ahead gained 1.07x, 64 at a time 1.36-1.46x (same process and heap, alternating). Against the
 * build before it: 1.30-1.46x with keys in a shuffled order, 1.03-1.26x in the order their
 * counters were made (bench/RESULTS.md 16i).
 */
export const READ_AHEAD_ENTRIES = 64;

/** The sum of what was read, written so that the compiler cannot drop the loads. */
// biome-ignore lint/correctness/noUnusedVariables: never read; the write is what keeps the loads
let sink = 0;

/** Scratch for one read-ahead: a hop's results, read by the next hop (emptied after). */
const hits: (CachedKey | undefined)[] = new Array(READ_AHEAD_ENTRIES).fill(undefined);
const counters: (Counter | undefined)[] = new Array(READ_AHEAD_ENTRIES).fill(undefined);

/**
 * One hop of the chain at a time over all the entries (entries, then counters and strings, then
 * numbers and tables, then the gateways' shares): within a hop the loads of different keys are
 * independent, so the CPU has many misses in flight, where a loop following each key's whole
 * chain in turn has only the few its window reaches. Against following each chain in turn: keys
 * in a shuffled order 1.04-1.22x (three swapped pairs), in creation order 1.05x (bench/RESULTS.md 16j).
 */
export function readAhead(
  resolver: KeyResolver,
  report: DecodedReport,
  clientId: string,
  from: number,
  to: number,
): void {
  const v = report.numbers;
  const epoch = report.keyEpoch;
  let sum = 0;
  let n = 0;
  for (
    let i = from, o = from * ENTRY_NUMBERS + AT_HANDLE;
    i < to && n < READ_AHEAD_ENTRIES;
    i++, o += ENTRY_NUMBERS
  ) {
    const handle = v[o]!;
    if (handle === 0) continue;
    const hit = resolver.byHandle(epoch, handle);
    if (hit !== undefined) hits[n++] = hit;
  }
  for (let k = 0; k < n; k++) {
    const hit = hits[k]!;
    const r = hit.resolved;
    // The rule is shared; the key strings are the key's own (the ownership check and the
    // policy notes read them).
    if (typeof r === "object") sum += r.counterKey.length + r.shardKey.length;
    counters[k] = hit.counter;
    hits[k] = undefined;
  }
  for (let k = 0; k < n; k++) {
    const c = counters[k];
    if (c !== undefined) sum += c.t + c.x + c.y + c.expiresAt;
  }
  for (let k = 0; k < n; k++) {
    const table = counters[k]?.clients;
    if (table !== undefined) sum += table.readAhead(clientId);
    counters[k] = undefined;
  }
  sink = sum;
}
