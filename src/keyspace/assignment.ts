/** Index of the slice holding `point`, given sorted slice starts beginning at 0. */
export function sliceIndex(starts: Uint32Array, point: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid]! <= point) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** A member of the cluster as the assignment names it. */
export interface Member {
  readonly id: string;
  /** host:port of its gRPC endpoint. */
  readonly address: string;
  /**
   * Leaving (SIGTERM): still registered and reachable, but placed no slices, so the slices it had
   * move to others and it hands their counters over before it stops.
   */
  readonly draining?: boolean;
}

/**
 * Who owns which slice of the key space in one generation. `starts` is sorted, begins at 0, and
 * slice i covers [starts[i], starts[i+1]) (the last runs to 2^32); `owners[i]` indexes `members`.
 * Every point has exactly one owner by construction. Immutable once built.
 */
export class Assignment {
  constructor(
    readonly generation: number,
    readonly members: readonly Member[],
    readonly starts: Uint32Array,
    readonly owners: Uint16Array,
    /**
     * The assignment this one replaced (without its own `previous`): who held each range before,
     * so a server that did not see it can still tell which of its new ranges wait for a handoff.
     */
    readonly previous?: Assignment,
    /** Wall-clock ms when the assigner wrote it: servers measure propagation against it. */
    readonly writtenAt?: number,
  ) {
    const problem = Assignment.problem(members, starts, owners);
    if (problem !== undefined)
      throw new RangeError(`invalid assignment (generation ${generation}): ${problem}`);
  }

  static problem(members: readonly Member[], starts: Uint32Array, owners: Uint16Array): string | undefined {
    if (starts.length === 0) return "no slices";
    if (starts.length !== owners.length) return `${starts.length} starts but ${owners.length} owners`;
    if (starts[0] !== 0) return `the first slice starts at ${starts[0]}, not 0`;
    for (let i = 1; i < starts.length; i++) {
      if (starts[i]! <= starts[i - 1]!)
        return `slice ${i} starts at ${starts[i]}, not after ${starts[i - 1]}`;
    }
    for (let i = 0; i < owners.length; i++) {
      if (owners[i]! >= members.length)
        return `slice ${i} is owned by member #${owners[i]} of ${members.length}`;
    }
    return undefined;
  }

  get slices(): number {
    return this.starts.length;
  }

  /** The slice holding `point`: binary search over the starts. */
  sliceOf(point: number): number {
    return sliceIndex(this.starts, point);
  }

  ownerOf(point: number): Member {
    return this.members[this.owners[this.sliceOf(point)]!]!;
  }

  /** Width of slice i in points (of 2^32). */
  width(i: number): number {
    const end = i + 1 < this.starts.length ? this.starts[i + 1]! : 2 ** 32;
    return end - this.starts[i]!;
  }
}

/** A range of points whose owner differs between two assignments. */
export interface Move {
  start: number;
  /** Exclusive, up to 2^32. */
  end: number;
  from: Member;
  to: Member;
}

/** The ranges whose owner (by member id) differs from `a` to `b`, adjacent ones merged. */
export function moves(a: Assignment, b: Assignment): Move[] {
  // Walk both slice tables together over their merged boundaries.
  const out: Move[] = [];
  let i = 0;
  let j = 0;
  let at = 0;
  while (at < 2 ** 32) {
    const endA = i + 1 < a.starts.length ? a.starts[i + 1]! : 2 ** 32;
    const endB = j + 1 < b.starts.length ? b.starts[j + 1]! : 2 ** 32;
    const end = Math.min(endA, endB);
    const from = a.members[a.owners[i]!]!;
    const to = b.members[b.owners[j]!]!;
    if (from.id !== to.id) {
      const last = out[out.length - 1];
      if (last && last.end === at && last.from.id === from.id && last.to.id === to.id) last.end = end;
      else out.push({ start: at, end, from, to });
    }
    at = end;
    if (end === endA) i++;
    if (end === endB) j++;
  }
  return out;
}

/** `span`'s points by their owner in `a`, in order, adjacent ones of one owner merged. */
export function ownersOf(
  a: Assignment,
  span: { start: number; end: number },
): (Member & { start: number; end: number })[] {
  const out: (Member & { start: number; end: number })[] = [];
  for (let i = a.sliceOf(span.start); i < a.slices && a.starts[i]! < span.end; i++) {
    const owner = a.members[a.owners[i]!]!;
    const start = Math.max(span.start, a.starts[i]!);
    const end = Math.min(span.end, a.starts[i]! + a.width(i));
    const last = out[out.length - 1];
    if (last && last.id === owner.id && last.end === start) last.end = end;
    else out.push({ ...owner, start, end });
  }
  return out;
}

/** The ranges member `id` owns in `a`, adjacent slices merged. */
export function rangesOf(a: Assignment, id: string): { start: number; end: number }[] {
  return ownersOf(a, { start: 0, end: 2 ** 32 })
    .filter((o) => o.id === id)
    .map((o) => ({ start: o.start, end: o.end }));
}

/** Fraction of the key space whose owner differs between two assignments (by member id). */
export function movedFraction(a: Assignment, b: Assignment): number {
  let moved = 0;
  for (const m of moves(a, b)) moved += m.end - m.start;
  return moved / 2 ** 32;
}
