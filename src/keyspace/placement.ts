import HashRing from "hashring";
import { Assignment, type Member } from "./assignment.js";

/** Slices per member when the key space is first cut (Dicer uses 32-64 per server). */
export const SLICES_PER_MEMBER = 64;
/** Ring points per member (x4 replicas): anything but hashring's default 40, which it rounds. */
const RING_VNODES = 50;

/** Equal-width slice starts: `n` slices over the 2^32 points. */
export function evenStarts(n: number): Uint32Array {
  if (!Number.isInteger(n) || n < 1 || n > 65_536)
    throw new RangeError(`slice count must be 1..65536, got ${n}`);
  const starts = new Uint32Array(n);
  for (let i = 0; i < n; i++) starts[i] = Math.floor((i * 2 ** 32) / n);
  return starts;
}

/**
 * Places slices on members with consistent hashing (ketama, via `hashring`): each slice goes to
 * the member the ring picks for the slice's start. A member joining or leaving therefore moves
 * only the slices the ring moves, about 1/N of them. With a `previous` assignment placement is
 * sticky: a slice stays with its owner unless that owner left (or is draining) or the ring gives
 * it to a member that was not there before, so the moves load balancing made survive a join or a
 * leave, and those still move only about 1/N. md5 per slice is fine here: this runs in the
 * assigner when membership changes, never per key.
 */
export function place(
  generation: number,
  members: readonly Member[],
  starts: Uint32Array,
  previous?: Assignment,
  writtenAt?: number,
): Assignment {
  if (members.length === 0) throw new RangeError("cannot place slices on zero members");
  const sorted = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const index = new Map(sorted.map((m, i) => [m.id, i]));
  // Draining members stay in the list (others wait for their handoff) but get no slices, unless
  // every member is draining: the key space must still have owners.
  const active = sorted.some((m) => !m.draining) ? sorted.filter((m) => !m.draining) : sorted;
  // Every member gets the same explicit number of ring points: hashring otherwise derives it as
  // floor(40 * n / n), which float rounding makes 39 for some n, and then a join would also move
  // slices between the members that stayed.
  const ring = new HashRing(Object.fromEntries(active.map((m) => [m.id, { vnodes: RING_VNODES }])));
  const activeIds = new Set(active.map((m) => m.id));
  const before = new Set(previous?.members.filter((m) => !m.draining).map((m) => m.id) ?? []);
  const owners = new Uint16Array(starts.length);
  for (let i = 0; i < starts.length; i++) {
    const ringId = ring.get(`slice:${starts[i]}`);
    const was = previous?.ownerOf(starts[i]!).id;
    const keep = was !== undefined && activeIds.has(was) && before.has(ringId);
    owners[i] = index.get(keep ? was : ringId)!;
  }
  return new Assignment(generation, sorted, starts, owners, withoutPrevious(previous), writtenAt);
}

/** `a` without its own `previous`, so assignments do not chain. */
export function withoutPrevious(a: Assignment | undefined): Assignment | undefined {
  if (a === undefined || a.previous === undefined) return a;
  return new Assignment(a.generation, a.members, a.starts, a.owners);
}

/** The first assignment of a cluster: `SLICES_PER_MEMBER` equal slices per member, placed. */
export function initialAssignment(
  generation: number,
  members: readonly Member[],
  writtenAt?: number,
): Assignment {
  const active = members.filter((m) => !m.draining).length || members.length;
  return place(generation, members, evenStarts(active * SLICES_PER_MEMBER), undefined, writtenAt);
}
