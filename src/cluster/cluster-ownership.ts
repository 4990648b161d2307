import type { Clock } from "../core/clock.js";
import {
  type Assignment,
  type Member,
  type Move,
  moves,
  ownersOf,
  rangesOf,
} from "../keyspace/assignment.js";
import { keyPoint, pointToWire } from "../keyspace/hash.js";
import { intersect, type Span, subtract } from "../keyspace/range-set.js";
import type { ClusterView } from "../protocol/messages.js";
import type { Owner, Ownership, OwnershipVerdict, Placed } from "../server/ownership.js";

/**
 * `PendingRange.from` of a range whose previous holder this server cannot name: it skipped the
 * generation that moved it (see `ClusterOwnership.update`). Any member's handoff may fill it.
 */
export const ANY_SENDER = "";

/** A range this server was given whose previous owner is alive and will hand its counters over. */
export interface PendingRange {
  start: number;
  end: number;
  /** Member id of the previous owner (`ANY_SENDER`: not known), and its address then. */
  from: string;
  fromAddress: string;
  generation: number;
  /** After this (`Clock.elapsed`) the range is served without the handoff (its counts rebuilt from gateways). */
  deadline: number;
}

/** A range this server lost while it still waited for its counters, and the member it went to. */
export interface RelayedRange extends PendingRange {
  to: Member;
}

/** What an assignment change means for this server. */
export interface OwnershipChange {
  generation: number;
  /** Ranges this server no longer owns and must hand to their new owner. */
  lost: Move[];
  /** Ranges this server now owns. */
  gained: Move[];
  /** Of `gained`, those that wait for a handoff before they are served. */
  pending: PendingRange[];
  /**
   * Ranges whose previous owner is no longer a member: it left without handing them over (its
   * lease expired): of `gained`, and ranges still waiting for a handoff from it. With
   * `reclaimOrphans` they wait, for its counters if it is alive.
   */
  orphaned: Move[];
}

export interface ClusterOwnershipOptions {
  selfId: string;
  clock: Clock;
  /** How long a gained range waits for its previous owner's handoff before being served anyway. */
  handoffTimeoutMs: number;
  /**
   * Whether ranges gained from a previous owner that is no longer a member wait for its counters
   * too (the node reclaims them: a server cut off from etcd is alive and holds them) until
   * `handoffDone` or the timeout. Off: they are served at once, counts rebuilt from gateways.
   */
  reclaimOrphans?: boolean;
}

/**
 * Ownership from the current assignment: this server serves a key only if the key's slice is
 * assigned to it in the generation it holds, and, for a slice it was just given by a live member,
 * only once that member's counters have arrived (or the handoff timed out). Until a first
 * assignment arrives it owns nothing.
 */
export class ClusterOwnership implements Ownership {
  private assignment: Assignment | undefined;
  private selfIndex = -1;
  private pending: PendingRange[] = [];
  private waiters: (() => void)[] = [];
  /** Key decisions per slice of the current assignment since the last `takeLoad`. */
  private hits = new Float64Array(0);
  private hitsSince = 0;
  /** Set while this server must not decide anything (see `suspend`). */
  private suspended = false;
  /**
   * Ranges this server lost while it still waited for their counters (A -> B, then B -> C before
   * A's handoff reached B): B passes A's counters on to C when they come, and holds the chunk that
   * ends its own move to C until then (`relayingFor`), else C, done with B, refuses them.
   */
  private relaying: RelayedRange[] = [];
  /** Ranges whose counters this server gave away since its assignment was installed (`release`). */
  private released: Span[] = [];

  constructor(private readonly opts: ClusterOwnershipOptions) {}

  /**
   * Installs a newer assignment and says what changed for this server; an older or equal
   * generation is ignored (generations only grow). The previous holder of each range is taken from
   * the assignment this server held if it is the one just before, else from the one the new
   * assignment names as its predecessor.
   *
   * A server that skips generations (its watch fell behind; it was cut off from etcd) can own a
   * range in the new assignment and its predecessor without holding its counters: the range left it
   * and came back in generations it never saw, or came to it in one (s3 held generation 3, gave a
   * range up to a reclaim for 4, 5 gave it back, 6 moved nothing: read against 5, it "kept" the
   * range and served it from nothing while the member that decided it in 4 had its handoff
   * refused). Such ranges wait for a handoff from whichever member sends one (`ANY_SENDER`).
   */
  update(a: Assignment): OwnershipChange | undefined {
    const held = this.assignment;
    if (held && a.generation <= held.generation) return undefined;
    const before = held && held.generation === a.generation - 1 ? held : (a.previous ?? held);
    this.takeLoad(); // counts of the old slices no longer fit the table
    this.assignment = a;
    this.selfIndex = a.members.findIndex((m) => m.id === this.opts.selfId);
    this.hits = new Float64Array(a.slices);
    const self = this.opts.selfId;
    const diff = before ? moves(before, a) : [];
    const lost = diff.filter((m) => m.from.id === self);
    const gained = diff.filter((m) => m.to.id === self);
    const alive = new Set(a.members.map((m) => m.id));
    const deadline = this.opts.clock.elapsed() + this.opts.handoffTimeoutMs;
    // Ranges still waiting from an earlier generation keep waiting while this server owns them;
    // those whose sender has left the cluster since are reclaimed from it like fresh orphans (it
    // is dead, or alive and cut off from etcd), rather than waited for until their deadline.
    // Ranges lost while still waiting move to `relaying`: the counters still coming for them pass on
    // to their new owner, and this server's own handoff to it waits for them (`relayingFor`).
    const mine = rangesOf(a, self); // (none unless a member: only a member carries ranges)
    // (Not this server's own standby restore, `awaitOwn`: those counters come from no handoff.)
    const coming = (p: PendingRange) => p.from === ANY_SENDER || (p.from !== self && alive.has(p.from));
    const carried: PendingRange[] = [];
    // (A range owned again is out of relaying: its counters are taken here, if it waits for them.)
    const relaying: RelayedRange[] = [];
    for (const p of this.relaying)
      if (coming(p)) for (const r of subtract([p], mine)) relaying.push({ ...p, start: r.start, end: r.end });
    for (const p of this.pending) {
      for (const r of intersect([p], mine)) carried.push({ ...p, start: r.start, end: r.end });
      if (!coming(p)) continue;
      for (const r of subtract([p], mine))
        for (const o of ownersOf(a, r)) {
          const { start, end, ...to } = o;
          relaying.push({ ...p, start, end, to });
        }
    }
    this.relaying = relaying;
    const departed: Move[] = carried
      .filter((p) => p.from !== ANY_SENDER && !alive.has(p.from))
      .map((p) => ({
        start: p.start,
        end: p.end,
        from: { id: p.from, address: p.fromAddress },
        to: a.members[this.selfIndex]!,
      }));
    const orphaned = [...gained.filter((m) => !alive.has(m.from.id)), ...departed];
    const fresh: PendingRange[] = gained
      .filter((m) => this.opts.reclaimOrphans || alive.has(m.from.id))
      .map((m) => ({
        start: m.start,
        end: m.end,
        from: m.from.id,
        fromAddress: m.from.address,
        generation: a.generation,
        deadline,
      }));
    if (held && before) {
      const kept = intersect(mine, rangesOf(before, self));
      const heldNow = subtract(rangesOf(held, self), this.released);
      for (const r of subtract(kept, heldNow))
        fresh.push({ ...r, from: ANY_SENDER, fromAddress: "", generation: a.generation, deadline });
    }
    this.released = [];
    this.pending = [...carried, ...fresh];
    this.notify();
    return { generation: a.generation, lost, gained, pending: fresh, orphaned };
  }

  /**
   * This server gave the counters of `ranges` away (a reclaim for a generation it does not hold
   * yet): a later assignment that names it their owner without moving them must not take them
   * for kept (`update`).
   */
  release(ranges: readonly Span[]): void {
    for (const r of ranges) this.released.push({ start: r.start, end: r.end });
  }

  /**
   * Holds `ranges` of this server's not ready, as a handoff from itself, until
   * `handoffDone(selfId, generation)` or the handoff timeout: a restarted server's ranges wait for
   * the standby copies its previous process left with its buddy.
   */
  awaitOwn(ranges: readonly { start: number; end: number }[], generation: number, address: string): void {
    const deadline = this.opts.clock.elapsed() + this.opts.handoffTimeoutMs;
    const from = this.opts.selfId;
    for (const r of ranges)
      this.pending.push({ start: r.start, end: r.end, from, fromAddress: address, generation, deadline });
    this.notify();
  }

  /**
   * The handoff from member `from` for `generation` (or earlier) is complete. `ranges`, the ones
   * it covered, also end the wait of ranges no sender was named for (`ANY_SENDER`).
   */
  handoffDone(from: string, generation: number, ranges: readonly Span[] = []): void {
    const pending = settled(this.pending, from, generation, ranges);
    const relaying = settled(this.relaying, from, generation, ranges);
    if (pending === this.pending && relaying === this.relaying) return;
    this.pending = pending;
    this.relaying = relaying;
    this.notify();
  }

  /**
   * The ranges overlapping `ranges` that this server lost to member `to` while still waiting for
   * their counters (until their sender's done, or their deadline). Those coming from `to` do not
   * count: a range that goes back to the member it came from (A -> B -> A) is A's again, and A, if
   * it saw itself lose it, keeps or gets back what it sent.
   */
  relayingFor(ranges: readonly Span[], to: string): readonly RelayedRange[] {
    this.expire();
    return this.relaying.filter((p) => p.to.id === to && p.from !== to && intersect([p], ranges).length > 0);
  }

  /**
   * The member this server lost `point` to while still waiting for its counters from `from`:
   * where they go when they come (that member waits for them from this server, and passes them on
   * in turn if it lost the range too), or undefined.
   */
  relayTo(from: string, point: number): Owner | undefined {
    for (const p of this.relaying)
      if ((p.from === from || p.from === ANY_SENDER) && point >= p.start && point < p.end)
        return { id: p.to.id, address: p.to.address, self: false }; // (lost: never this server)
    return undefined;
  }

  /**
   * For one Handoff call from member `from`: why it may not hand this server the counter at a
   * point, or undefined when it may: only while the point is in a range this server gained from
   * `from` (its holder in the generation before), or from a sender it could not name
   * (`ANY_SENDER`), and still waits for. Anything else (a forged
   * handoff, a range not moved, a chunk after the move's `done` or its timeout) changes nothing.
   * The price: counters sent past the timeout are refused too, and rebuilt from gateways as after
   * any timed-out handoff. (A member passing counters on from a back-to-back move holds its own
   * `done` to this server until they are sent: `Handoff.passedOn`.)
   * The sender's ranges are sorted once per call, so each counter costs a binary search.
   */
  handoffRefusal(from: string): (point: number) => string | undefined {
    const ranges = this.waiting()
      .filter((p) => p.from === from || p.from === ANY_SENDER)
      .sort((a, b) => a.start - b.start);
    return (point) => {
      let lo = 0;
      let hi = ranges.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (ranges[mid]!.start <= point) lo = mid + 1;
        else hi = mid;
      }
      // Ranges may overlap (carried from earlier generations): any that starts at or before it.
      for (let i = lo - 1; i >= 0; i--) if (point < ranges[i]!.end) return undefined;
      return `point ${point} is in no range this server gained from ${JSON.stringify(from)} and waits for (no move of it is pending)`;
    };
  }

  /**
   * When the last range still waiting for `from`'s handoff of `generation` (or earlier) stops
   * waiting (`Clock.elapsed`), or undefined when none waits.
   */
  waitingUntil(from: string, generation: number): number | undefined {
    let until: number | undefined;
    for (const p of this.waiting())
      if (p.from === from && p.generation <= generation) until = Math.max(until ?? 0, p.deadline);
    return until;
  }

  /** Ranges still waiting for a handoff (expired ones dropped). */
  waiting(): readonly PendingRange[] {
    this.expire();
    return this.pending;
  }

  private expire(): void {
    if (this.pending.length === 0 && this.relaying.length === 0) return;
    const now = this.opts.clock.elapsed();
    const before = this.pending.length + this.relaying.length;
    this.pending = this.pending.filter((p) => p.deadline > now);
    this.relaying = this.relaying.filter((p) => p.deadline > now);
    if (this.pending.length + this.relaying.length !== before) this.notify();
  }

  /** Holds a current assignment, is not suspended, and every range it owns is ready. */
  ready(): boolean {
    return this.assignment !== undefined && !this.suspended && this.waiting().length === 0;
  }

  /**
   * While suspended every key answers `not_owner` (gateways then fetch a fresh view and re-route)
   * and the server is not ready: set when this server may have lost its lease and cannot rule out
   * that its slices were given to others (`ClusterNode`'s lease guard).
   */
  suspend(on: boolean): void {
    if (this.suspended === on) return;
    this.suspended = on;
    this.notify();
  }

  isSuspended(): boolean {
    return this.suspended;
  }

  current(): Assignment | undefined {
    return this.assignment;
  }

  slicesOwned(): number {
    const a = this.assignment;
    if (!a || this.selfIndex < 0) return 0;
    let n = 0;
    for (let i = 0; i < a.slices; i++) if (a.owners[i] === this.selfIndex) n++;
    return n;
  }

  generation(): number {
    return this.assignment?.generation ?? 0;
  }

  owns(point: number): boolean {
    const a = this.assignment;
    return a !== undefined && this.selfIndex >= 0 && a.owners[a.sliceOf(point)] === this.selfIndex;
  }

  /**
   * Decisions per second on each slice this server owns since the last call, as point ranges
   * [start, end, rate] (slices with none left out): the load the assigner balances.
   */
  takeLoad(): { generation: number; ranges: [number, number, number][] } {
    const a = this.assignment;
    const now = this.opts.clock.elapsed();
    const seconds = Math.max(0.001, (now - this.hitsSince) / 1000);
    const ranges: [number, number, number][] = [];
    if (a) {
      for (let i = 0; i < this.hits.length; i++) {
        if (this.hits[i]! > 0)
          ranges.push([a.starts[i]!, a.starts[i]! + a.width(i), this.hits[i]! / seconds]);
      }
    }
    this.hits.fill(0);
    this.hitsSince = now;
    return { generation: a?.generation ?? 0, ranges };
  }

  check(shardKey: string, placed?: Placed): OwnershipVerdict {
    const point = pointOf(shardKey, placed);
    const a = this.assignment;
    if (a === undefined || this.selfIndex < 0 || this.suspended) return "not_owner";
    const slice = a.sliceOf(point);
    if (a.owners[slice] !== this.selfIndex) return "not_owner";
    this.hits[slice]!++;
    if (this.pending.length === 0) return "own";
    this.expire();
    for (const p of this.pending) if (point >= p.start && point < p.end) return "not_ready";
    return "own";
  }

  ownerOf(shardKey: string, placed?: Placed): Owner | undefined {
    const a = this.assignment;
    if (!a) return undefined;
    const i = a.owners[a.sliceOf(pointOf(shardKey, placed))]!;
    const m = a.members[i]!;
    return { id: m.id, address: m.address, self: i === this.selfIndex };
  }

  changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.opts.clock.after(ms, done);
      const waiters = this.waiters;
      function done() {
        timer.cancel();
        const i = waiters.indexOf(done);
        if (i >= 0) waiters.splice(i, 1);
        resolve();
      }
      waiters.push(done);
    });
  }

  private notify(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  view(): ClusterView {
    const a = this.assignment;
    if (!a) return { generation: 0, members: [], slices: [], standalone: false };
    return {
      generation: a.generation,
      members: a.members.map((m) => ({ id: m.id, address: m.address })),
      slices: Array.from(a.starts, (start, i) => ({ start: pointToWire(start), owner: a.owners[i]! })),
      standalone: false,
    };
  }
}

/**
 * `list` without what a done handoff from `from` for `generation` settles: its ranges of that
 * generation or earlier, and of the ranges no sender was named for, those the handoff covered.
 * The same array when nothing changed.
 */
function settled<T extends PendingRange>(
  list: T[],
  from: string,
  generation: number,
  ranges: readonly Span[],
): T[] {
  let changed = false;
  const next: T[] = [];
  for (const p of list) {
    if (p.from === from && p.generation <= generation) changed = true;
    else if (p.from !== ANY_SENDER || ranges.length === 0) next.push(p);
    else {
      const rest = subtract([p], ranges);
      if (rest.length !== 1 || rest[0]!.start !== p.start || rest[0]!.end !== p.end) changed = true;
      for (const r of rest) next.push({ ...p, start: r.start, end: r.end });
    }
  }
  return changed ? next : list;
}

/** The key's point, from `placed` when the caller kept it, else hashed (and kept there). */
function pointOf(shardKey: string, placed: Placed | undefined): number {
  if (placed === undefined) return keyPoint(shardKey);
  placed.point ??= keyPoint(shardKey);
  return placed.point;
}
