import type { Counter } from "./counter.js";
import type { CounterSnapshot } from "./transfer.js";

/** A range of key-space points, [start, end), end up to 2^32. */
export interface PointRange {
  start: number;
  end: number;
}

/** Taking the counters of some ranges out of the engine, a slice at a time. */
export interface CounterTake {
  /**
   * Takes out the next counters of the ranges, visiting at most `budget` counters (so one call
   * holds the thread briefly), and returns the snapshots of those worth handing over. `more`
   * while some of the ranges' counters may remain.
   */
  next(now: number, budget: number): { counters: CounterSnapshot[]; more: boolean };
}

/** The index keeps one bucket per 2^20 points: the top 12 bits of a point, 4,096 buckets. */
const BUCKET_SHIFT = 20;
const BUCKET_WIDTH = 2 ** BUCKET_SHIFT;
const BUCKETS = 2 ** (32 - BUCKET_SHIFT);

/**
 * The key-to-counter table grows by extendible hashing: a V8 Map rehashes every entry in one go
 * when it grows, which at millions of counters held the thread for hundreds of milliseconds (one
 * new counter on the traffic path, or one handoff chunk on a receiver). The counters start in one
 * map; a map past 1-2x SPLIT_AT counters (`Part.splitAt`) is rebuilt as two by the next bit of
 * its keys' hashes (~10 ms), so no map holds more than 2 * SPLIT_AT and a table under SPLIT_AT stays
 * one map: 256 maps from the start cost `engine.check` 22-38% (look-ups in insertion order walk one
 * map's entries in order; many maps interleave them).
 */
const SPLIT_AT = 2 ** 15;
/** At most 2^MAX_DEPTH maps (past 2^MAX_DEPTH * 2 * SPLIT_AT counters the maps grow on). */
const MAX_DEPTH = 12;

/** One map of the table and how many top bits of the hash its keys share. */
class Part extends Map<string, Counter> {
  /**
   * Counters past which this part splits: SPLIT_AT to 2 * SPLIT_AT, set by its hash prefix. Keys
   * spread evenly, so parts of one depth fill in step: with one threshold they would all split
   * within a few handoff chunks (a 313 ms turn at 1M counters); staggered, a chunk meets one.
   */
  readonly splitAt: number;

  constructor(
    readonly depth: number,
    readonly prefix: number,
  ) {
    super();
    this.splitAt =
      SPLIT_AT + ((Math.imul(prefix + depth * 0x61c88647, 0x9e3779b1) >>> 0) / 2 ** 32) * SPLIT_AT;
  }
}

/**
 * The hash that picks the part of the table holding `key` (by its top bits): every UTF-16 unit
 * added into a rotating 32-bit sum, then a murmur3 finish so the top bits depend on every unit. It runs on every look-up, so it is the
 * cheapest loop that still reads the whole key (sampling a long key crowded keys that differ only in
 * an id in the middle into a few parts); add-rotate, not xor, so an id repeated in a key 32 units
 * apart does not cancel out.
 */
export function hashOf(key: string): number {
  let h = key.length;
  for (let i = 0; i < key.length; i++) h = (((h << 7) | (h >>> 25)) + key.charCodeAt(i)) | 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 13)) >>> 0;
}

/**
 * The engine's counters by key, and, given a point function, indexed by bucket of the key space
 * too, so the counters of some ranges (slices that moved) are found without visiting the rest.
 * Iteration goes part by part (within a part, in insertion order), not in insertion order overall.
 */
export class CounterTable {
  /** The parts by the top `depth` bits of their keys' hashes (a part spans 2^(depth - its depth)). */
  private dir: Part[] = [new Part(0, 0)];
  private depth = 0;
  /** Every part once, oldest first (a split appends the new half). */
  private readonly parts: Part[] = [this.dir[0]!];
  private count = 0;
  /** With `pointOf`: the counters by bucket of their point (see BUCKET_SHIFT). */
  private readonly buckets: Map<string, Counter>[] | undefined;

  constructor(private readonly pointOf?: (shard: string) => number) {
    this.buckets = pointOf ? Array.from({ length: BUCKETS }, () => new Map()) : undefined;
  }

  get size(): number {
    return this.count;
  }

  /** The most counters any one internal map holds (for tests: no map grows to the whole table). */
  get largestPart(): number {
    let n = 0;
    for (const m of this.parts) n = Math.max(n, m.size);
    return n;
  }

  private partOf(key: string): Part {
    // Two shifts: a shift by 32 is a shift by 0 in JS, and depth 0 must give index 0.
    return this.dir[(hashOf(key) >>> 1) >>> (31 - this.depth)]!;
  }

  get(key: string): Counter | undefined {
    return this.partOf(key).get(key);
  }

  /**
   * Every counter, part by part. Live, as a Map iterator is: a counter added to a part not yet
   * reached is visited, one added to a part already passed is not (until the next pass), and one
   * moved by a split may be visited twice; a counter removed is not visited.
   */
  *entries(): IterableIterator<[string, Counter]> {
    // A part split while its entries are being walked is walked on: skip what left it since.
    for (let i = 0; i < this.parts.length; i++)
      for (const e of this.parts[i]!.entries()) if (!e[1].removed) yield e;
  }

  [Symbol.iterator](): IterableIterator<[string, Counter]> {
    return this.entries();
  }

  /** Adds or replaces the counter of `key`, keeping the index in step. */
  install(key: string, c: Counter, replaced: Counter | undefined): void {
    if (replaced !== undefined) this.unindex(key, replaced);
    const part = this.partOf(key);
    const before = part.size;
    part.set(key, c);
    this.count += part.size - before;
    if (part.size > part.splitAt && part.depth < MAX_DEPTH) this.split(part);
    if (this.buckets !== undefined) {
      c.point =
        replaced !== undefined && replaced.shard === c.shard ? replaced.point : this.pointOf!(c.shard);
      this.buckets[c.point >>> BUCKET_SHIFT]!.set(key, c);
    }
  }

  /** Removes the counter of `key` (which is `c`) and marks it removed. */
  drop(key: string, c: Counter): void {
    const part = this.partOf(key);
    if (part.get(key) === c && part.delete(key)) this.count--;
    this.unindex(key, c);
  }

  /**
   * Replaces `part` by two fresh maps split by the next bit of the keys' hashes (fresh, not half
   * deleted: a V8 Map keeps deleted entries in its chains until it next grows, slowing look-ups).
   */
  private split(part: Part): void {
    if (part.depth === this.depth) {
      this.dir = Array.from({ length: this.dir.length * 2 }, (_, i) => this.dir[i >>> 1]!);
      this.depth++;
    }
    const depth = part.depth + 1;
    const low = new Part(depth, part.prefix * 2);
    const high = new Part(depth, part.prefix * 2 + 1);
    const bit = 32 - depth;
    for (const [key, c] of part) (((hashOf(key) >>> bit) & 1) === 1 ? high : low).set(key, c);
    const shift = this.depth - depth;
    for (let i = 0; i < this.dir.length; i++)
      if (this.dir[i] === part) this.dir[i] = ((i >>> shift) & 1) === 1 ? high : low;
    this.parts[this.parts.indexOf(part)] = low;
    this.parts.push(high);
  }

  private unindex(key: string, c: Counter): void {
    c.removed = true;
    if (this.buckets === undefined) return;
    const b = this.buckets[c.point >>> BUCKET_SHIFT]!;
    if (b.get(key) === c) b.delete(key);
  }

  /**
   * A walk over the counters whose shard's point lies in `ranges` (disjoint): each call visits at
   * most `budget` counters, passes those in the ranges to `visit` (which may drop them), and
   * returns whether some may remain. With the index it visits only the buckets overlapping the
   * ranges; without, every counter, asking `pointOf` (which must agree with the table's).
   * Counters added to the ranges while the walk is under way may or may not be visited.
   */
  walkRanges(
    ranges: readonly PointRange[],
    pointOf: (shard: string) => number,
  ): (budget: number, visit: (key: string, c: Counter) => void) => boolean {
    const sorted = [...ranges].sort((a, b) => a.start - b.start);
    const inRanges = (p: number) => rangeAt(sorted, p) !== undefined;
    if (this.buckets === undefined) {
      const cursor = this.entries();
      return (budget, visit) => {
        for (let i = 0; i < budget; i++) {
          const n = cursor.next();
          if (n.done) return false;
          const [key, c] = n.value;
          if (inRanges(pointOf(c.shard))) visit(key, c);
        }
        return true;
      };
    }
    // The buckets the ranges touch, each with whether a range covers it whole.
    const todo: { bucket: number; whole: boolean }[] = [];
    for (const r of sorted) {
      if (r.end <= r.start) continue;
      const first = Math.floor(r.start / BUCKET_WIDTH);
      const last = Math.floor((r.end - 1) / BUCKET_WIDTH);
      for (let b = first; b <= last; b++) {
        const whole = b * BUCKET_WIDTH >= r.start && (b + 1) * BUCKET_WIDTH <= r.end;
        const prev = todo[todo.length - 1];
        if (prev?.bucket === b) prev.whole = false;
        else todo.push({ bucket: b, whole });
      }
    }
    const buckets = this.buckets;
    let at = 0;
    let cursor: Iterator<[string, Counter]> | undefined;
    return (budget, visit) => {
      let visited = 0;
      while (at < todo.length) {
        const { bucket, whole } = todo[at]!;
        cursor ??= buckets[bucket]!.entries();
        for (;;) {
          if (visited >= budget) return true;
          const n = cursor.next();
          if (n.done) break;
          visited++;
          const [key, c] = n.value;
          if (whole || inRanges(c.point)) visit(key, c);
        }
        cursor = undefined;
        at++;
      }
      return false;
    };
  }
}

/** The one of `ranges` (sorted by start, disjoint) that holds `point`: a binary search. */
export function rangeAt<R extends PointRange>(ranges: readonly R[], point: number): R | undefined {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = ranges[mid]!;
    if (point < r.start) hi = mid - 1;
    else if (point >= r.end) lo = mid + 1;
    else return r;
  }
  return undefined;
}
