import type { CounterSnapshot } from "../core/transfer.js";
import type { Member } from "../keyspace/assignment.js";
import { buddyOf } from "../keyspace/buddy.js";
import { keyPoint } from "../keyspace/hash.js";
import { ErrorCode, itemError } from "../protocol/item-errors.js";
import type {
  PointRange,
  ReplicateRequest,
  ReplicateResponse,
  StandbyRequest,
  StandbyResponse,
} from "../protocol/messages.js";
import { root } from "../protocol/proto.js";
import type { ClusterOwnership } from "./cluster-ownership.js";
import { ChunkCutter } from "./handoff.js";
import type { Log } from "./log.js";
import type { PeerRpc } from "./peers.js";
import type { StandbyStore } from "./standby-store.js";

/** How long a Standby call waits for the buddy's answer (as a Reclaim waits for the owner's). */
export const STANDBY_DEADLINE_MS = 1000;

const StandbyResponseType = root.lookupType("shardlimit.v1.StandbyResponse");

export interface StandbyOptions {
  selfId: string;
  ownership: Pick<ClusterOwnership, "current" | "generation">;
  store: StandbyStore;
  /** Only the Standby call is used: tests pass a fake with just that. */
  peer: (address: string) => Pick<PeerRpc, "standby">;
  log: Log;
  /** The largest message between peers: a Standby answer is cut in pages below it. */
  maxMessageBytes: number;
  /** Most copies in one page (the Handoff counter bound). */
  maxCounters: number;
}

/**
 * The buddy's side of standby copies (what it accepts, what it answers), and the new owner's
 * side of a takeover: fetching a dead member's copies from its buddy.
 */
export class StandbyCopies {
  constructor(private readonly opts: StandbyOptions) {}

  /**
   * Copies from a member, stored only when this server is its buddy in the assignment it holds: a
   * server that is not cannot be asked for them on a takeover, so they would only take room.
   */
  replicate(req: ReplicateRequest): ReplicateResponse {
    const { ownership, store, selfId, log } = this.opts;
    const generation = ownership.generation();
    const a = ownership.current();
    const refuse = (code: ErrorCode, why: string) => ({
      accepted: 0,
      generation,
      error: itemError(code, why),
    });
    if (a === undefined || !a.members.some((m) => m.id === req.from))
      return refuse(
        ErrorCode.NOT_OWNER,
        `${req.from} is not a member of this server's assignment (generation ${generation})`,
      );
    const buddy = buddyOf(a.members, req.from);
    if (buddy?.id !== selfId)
      return refuse(
        ErrorCode.NOT_OWNER,
        `this server is not ${req.from}'s buddy in generation ${generation} (${buddy?.id ?? "none"} is)`,
      );
    if (req.drained) {
      const dropped = store.drop(req.from);
      log.info({ from: req.from, dropped }, "standby: copies dropped (their member handed its ranges over)");
      return { accepted: 0, generation };
    }
    const put = store.put(req.from, req.counters);
    if ("refused" in put) return refuse(ErrorCode.COUNTERS_EXHAUSTED, put.refused);
    return { accepted: put.stored, generation };
  }

  /**
   * The copies of `req.of` in `req.ranges`, a page at a time: as many as fit a message from
   * `req.offset` on. Reading changes nothing, so anyone may ask.
   */
  standby(req: StandbyRequest): StandbyResponse {
    const { ownership, store, log } = this.opts;
    const generation = ownership.generation();
    const all = store.copies(req.of, req.ranges, keyPoint);
    const header = StandbyResponseType.encode({ nextOffset: 2 ** 32 - 1, generation }).finish().length + 16;
    const cut = new ChunkCutter(this.opts.maxMessageBytes - header, this.opts.maxCounters);
    let i = req.offset;
    for (; i < all.length && cut.ready.length === 0; i++) cut.add(all[i]!);
    let counters: CounterSnapshot[];
    let nextOffset = 0;
    if (cut.ready.length > 0) {
      // The copy that did not fit (the last added) starts the next page.
      counters = cut.ready[0]!;
      nextOffset = i - 1;
    } else {
      cut.flush();
      counters = cut.ready[0] ?? [];
    }
    if (cut.oversized.length > 0)
      log.error(
        { of: req.of, lost: cut.oversized.length },
        "standby: copies larger than a message on their own are not sent",
      );
    return { counters, nextOffset, generation };
  }

  /**
   * The standby copies of `of`'s counters in `ranges`, from its buddies in `memberLists` (the
   * assignments it was a member of, newest first): this server's own store when it is one.
   *
   * Why more than one: a member that joins with an id between a dead member and its buddy becomes
   * the dead member's buddy in the newest assignment, but holds only what the dead member sent it
   * after that (often nothing: a replacement pod joins before the old lease expires). The buddy of
   * the older assignment still holds its copies. So every distinct buddy is asked; per key the
   * newest buddy's copy wins (it was sent last), older buddies fill the keys it lacks. Rejects with
   * every reason when there is no buddy or none answers.
   */
  async fetch(
    of: Member,
    memberLists: readonly (readonly Member[])[],
    generation: number,
    ranges: readonly PointRange[],
  ): Promise<{ buddy: string; copies: CounterSnapshot[] }> {
    const buddies: Member[] = [];
    for (const members of memberLists) {
      const b = buddyOf(members, of.id);
      if (b !== undefined && !buddies.some((x) => x.id === b.id)) buddies.push(b);
    }
    if (buddies.length === 0) throw new Error(`no buddy known for ${of.id}`);
    const byKey = new Map<string, CounterSnapshot>();
    const answered: string[] = [];
    const failed: string[] = [];
    // Asked together: a dead or slow buddy costs one deadline, not one per buddy.
    const results = await Promise.allSettled(buddies.map((b) => this.fetchFrom(b, of, generation, ranges)));
    for (const [i, r] of results.entries()) {
      if (r.status === "rejected") {
        failed.push((r.reason as Error).message);
        continue;
      }
      for (const c of r.value) if (!byKey.has(c.key)) byKey.set(c.key, c);
      answered.push(buddies[i]!.id);
    }
    if (answered.length === 0) throw new Error(failed.join("; "));
    return { buddy: answered.join(","), copies: [...byKey.values()] };
  }

  /** One buddy's copies of `of` in `ranges`, page by page (the local store when it is this server). */
  private async fetchFrom(
    buddy: Member,
    of: Member,
    generation: number,
    ranges: readonly PointRange[],
  ): Promise<CounterSnapshot[]> {
    if (buddy.id === this.opts.selfId) return this.opts.store.copies(of.id, ranges, keyPoint);
    const copies: CounterSnapshot[] = [];
    const wire = ranges.map((r) => ({ start: r.start, end: r.end }));
    for (let offset = 0; ; ) {
      const res = await this.opts
        .peer(buddy.address)
        .standby({ of: of.id, generation, ranges: wire, offset }, { deadlineMs: STANDBY_DEADLINE_MS });
      if (res.error?.code) throw new Error(`${buddy.id}: ${res.error.message}`);
      copies.push(...res.counters);
      // A page must move on, or a confused buddy could keep this server asking forever.
      if (!res.nextOffset || res.nextOffset <= offset) break;
      offset = res.nextOffset;
    }
    return copies;
  }
}
