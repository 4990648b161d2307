import { type Clock, every, type Timer } from "../core/clock.js";
import type { CounterSnapshot } from "../core/transfer.js";
import { buddyOf } from "../keyspace/buddy.js";
import { keyPoint } from "../keyspace/hash.js";
import { root } from "../protocol/proto.js";
import type { ClusterOwnership } from "./cluster-ownership.js";
import { ChunkCutter } from "./handoff.js";
import type { Log } from "./log.js";
import type { PeerRpc } from "./peers.js";

/** The engine as the replicator sees it. */
export interface ChangedCounters {
  takeChanged(max: number, now: number): CounterSnapshot[];
  markChanged(keys: Iterable<string>): void;
  markAllChanged(): void;
}

export const DEFAULT_REPLICATE_INTERVAL_MS = 200;

export interface ReplicatorOptions {
  selfId: string;
  counters: ChangedCounters;
  ownership: Pick<ClusterOwnership, "current" | "generation" | "owns">;
  /** Only the Replicate call is used: tests pass a fake with just that. */
  peer: (address: string) => Pick<PeerRpc, "replicate">;
  clock: Clock;
  log: Log;
  /** How often changed counters go to the buddy (0: never). */
  intervalMs: number;
  /** The buddy's largest accepted message: calls are cut below it. */
  maxMessageBytes: number;
  /** Most counters per call (the Handoff chunk size). */
  chunk?: number;
  /**
   * Most counters taken per round: the snapshots are made in one turn of the event loop, so this
   * bounds the turn; a backlog waits for the next rounds (the engine keeps it).
   */
  perRound?: number;
  onSent?: (to: string, counters: number, ok: boolean) => void;
}

const ReplicateRequestType = root.lookupType("shardlimit.v1.ReplicateRequest");

/**
 * Standby copies, the owner's side: every interval the counters changed since the last round go
 * to this server's buddy (`buddyOf`), so that if this server dies the new owners of its ranges
 * start from them (design invariant 9: a sync-only key otherwise starts its window at zero). A
 * call that fails puts its counters back as changed, for the next round.
 */
export class Replicator {
  private timer: Timer | undefined;
  private busy = false;
  /** The buddy of the last round: a new one has none of the copies, so every counter goes again. */
  private buddyId: string | undefined;

  constructor(private readonly opts: ReplicatorOptions) {}

  start(): void {
    if (!(this.opts.intervalMs > 0) || this.timer) return;
    this.timer = every(this.opts.clock, this.opts.intervalMs, () => void this.round());
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** One round: the changed counters of ranges this server owns, to its buddy. */
  async round(): Promise<void> {
    const { ownership, counters, clock, selfId } = this.opts;
    const a = ownership.current();
    if (this.busy || a === undefined) return;
    const buddy = buddyOf(a.members, selfId);
    if (buddy === undefined) {
      // Nobody to keep copies (a single member). Nothing is taken: snapshots would be made for
      // nobody, and the engine's list stays bounded by its counters (flagged ones add nothing).
      this.buddyId = undefined;
      return;
    }
    if (buddy.id !== this.buddyId) {
      if (this.buddyId !== undefined)
        this.opts.log.info(
          { buddy: buddy.id, was: this.buddyId },
          "standby: new buddy, sending every counter",
        );
      counters.markAllChanged();
      this.buddyId = buddy.id;
    }
    const taken = counters.takeChanged(this.opts.perRound ?? 10_000, clock.now());
    const mine = taken.filter((c) => ownership.owns(keyPoint(c.shard || c.key)));
    if (mine.length === 0) return;
    this.busy = true;
    try {
      await this.send(buddy, a.generation, mine);
    } finally {
      this.busy = false;
    }
  }

  private async send(
    buddy: { id: string; address: string },
    generation: number,
    copies: CounterSnapshot[],
  ): Promise<void> {
    const { selfId, log, counters } = this.opts;
    const header =
      ReplicateRequestType.encode({ from: selfId, generation, counters: [], drained: true }).finish().length +
      16;
    const cut = new ChunkCutter(this.opts.maxMessageBytes - header, this.opts.chunk ?? 2000);
    for (const c of copies) cut.add(c);
    cut.flush();
    if (cut.oversized.length > 0) {
      this.opts.onSent?.(buddy.id, cut.oversized.length, false);
      log.error(
        { to: buddy.id, lost: cut.oversized.length },
        "standby: counters larger than a message on their own are not replicated",
      );
    }
    for (const part of cut.ready) {
      if (part.length === 0) continue;
      let problem: string | undefined;
      try {
        const res = await this.opts
          .peer(buddy.address)
          .replicate({ from: selfId, generation, counters: part, drained: false }, { deadlineMs: 1000 });
        if (res.error?.code) problem = res.error.message;
      } catch (err) {
        problem = (err as Error).message;
      }
      this.opts.onSent?.(buddy.id, part.length, problem === undefined);
      if (problem !== undefined) {
        // Only counters that still exist are flagged again: the retry is bounded by the table.
        counters.markChanged(part.map((c) => c.key));
        log.debug(
          { to: buddy.id, counters: part.length, problem },
          "standby: replication failed; retried next round",
        );
      }
    }
  }

  /** Tells the buddy this server handed its ranges over (a drain): its copies can go. */
  async drained(): Promise<void> {
    const { ownership, selfId, log } = this.opts;
    const a = ownership.current();
    const buddy = a ? buddyOf(a.members, selfId) : undefined;
    if (!buddy || !a) return;
    await this.opts
      .peer(buddy.address)
      .replicate(
        { from: selfId, generation: a.generation, counters: [], drained: true },
        { deadlineMs: 1000 },
      )
      .catch((err: Error) => log.debug({ to: buddy.id, err: err.message }, "standby: cannot tell the buddy"));
  }
}
