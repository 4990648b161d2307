import { poolShardKey } from "../config/types.js";
import { type Clock, sleep } from "../core/clock.js";
import type { CounterTake, PointRange } from "../core/counter-table.js";
import { CapacityError } from "../core/decision.js";
import type { CounterSource } from "../core/engine.js";
import { PermissionDeniedError } from "../core/errors.js";
import { type PoolTransfer, poolTransferProblem } from "../core/pool.js";
import { agedSnapshot, type CounterSnapshot, snapshotProblem } from "../core/transfer.js";
import type { Member, Move } from "../keyspace/assignment.js";
import { keyPoint } from "../keyspace/hash.js";
import { varintSize } from "../protocol/fast-encode.js";
import { ErrorCode } from "../protocol/item-errors.js";
import type { HandoffRequest, HandoffResponse } from "../protocol/messages.js";
import { root } from "../protocol/proto.js";
import type { ClusterOwnership, OwnershipChange, PendingRange } from "./cluster-ownership.js";
import type { Log } from "./log.js";
import { PEER_MAX_MESSAGE_BYTES, type PeerRpc } from "./peers.js";

/** The engine as the handoff sees it. */
export interface CounterStore {
  /** The counters of `ranges`, taken out a slice at a time. */
  takeRanges(ranges: readonly PointRange[], pointOf: (shard: string) => number): CounterTake;
  /** Merges counters in; `standby` copies stay open to gateways' re-sent totals (Engine.putCounters). */
  putCounters(snapshots: readonly CounterSnapshot[], now: number, source?: CounterSource): number;
}

/**
 * How long a sender retries a receiver it cannot reach before giving its counters up. A receiver
 * waits at least this long by default (`DEFAULT_HANDOFF_TIMEOUT_MS`): serving earlier, it would
 * start the moved keys empty while their counts may still arrive.
 */
export const HANDOFF_GIVE_UP_MS = 10_000;
export const DEFAULT_HANDOFF_TIMEOUT_MS = HANDOFF_GIVE_UP_MS + 2000;

/** A server's pools as the handoff sees them (server/pools.ts PoolDesk). */
export interface PoolHandover {
  /** The state of the pools whose key's point is in `ranges`, taken out. */
  take(ranges: readonly PointRange[], now: number): PoolTransfer[];
  /** A checked pool state in; false when no pool of that name is defined here. */
  put(t: PoolTransfer, now: number): boolean;
}

/** The next batch of counters to send, and whether more may follow. */
type Batches = () => { counters: CounterSnapshot[]; more: boolean };

/** Yields to the event loop: I/O and timers due run before the next slice. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface HandoffOptions {
  selfId: string;
  store: CounterStore;
  ownership: ClusterOwnership;
  /** Only the Handoff call is used: tests pass a fake with just that. */
  peer: (address: string) => Pick<PeerRpc, "handoff">;
  clock: Clock;
  log: Log;
  /** Most counters per Handoff call. */
  chunk?: number;
  /**
   * Counters visited per turn of the event loop when taking them out of the store (default 500,
   * about a millisecond): slices gather into chunks, so a large table never holds the thread long.
   */
  slice?: number;
  /** How the sender yields between slices (default: to the next turn of the event loop). */
  yieldTurn?: () => Promise<void>;
  /**
   * The receiver's largest accepted message: chunks are cut by encoded size below it (a hot key
   * reported by hundreds of gateways is a large snapshot, so a count alone does not bound bytes).
   */
  maxMessageBytes?: number;
  retryMs?: number;
  /** A receiver that cannot be reached for this long is given up on (it rebuilds from gateways). */
  giveUpMs?: number;
  onSent?: (to: string, counters: number, ok: boolean) => void;
  onReceived?: (from: string, counters: number) => void;
  /** The pools (issue 14), whose state goes with their key; absent: counters only. */
  pools?: () => PoolHandover | undefined;
}

const HandoffRequestType = root.lookupType("shardlimit.v1.HandoffRequest");
const CounterStateType = root.lookupType("shardlimit.v1.CounterState");

/**
 * A handoff's first chunk carries at most this many counters, the next twice as many, and so on up
 * to the chunk size. A process's first handoff runs cold code on both sides (protobufjs's encoder
 * and decoder generated on first use, then interpreted until V8 optimizes them, and the receiver's
 * put): 10-40x slower per counter than warm, which over a full first chunk of 2,000 held a turn for
 * 100+ ms at 5M counters. Small chunks first keep those turns short while the code warms.
 */
export const FIRST_CHUNK = 125;

/**
 * Counters cut into chunks of at most `maxCount` counters and `budget` encoded bytes each (a
 * counter in a repeated field costs its tag, its length and its bytes), as they come: each is
 * measured when added, so the cost is spread over the slices that take them. A counter larger than
 * the budget on its own goes in `oversized`: no chunk could carry it. The first chunk holds at most
 * `firstCount` counters, each next one twice as many, up to `maxCount`.
 */
export class ChunkCutter {
  /** Chunks full and ready to go. */
  ready: CounterSnapshot[][] = [];
  oversized: CounterSnapshot[] = [];
  private current: CounterSnapshot[] = [];
  private bytes = 0;
  private count: number;

  constructor(
    private readonly budget: number,
    private readonly maxCount: number,
    firstCount = maxCount,
  ) {
    this.count = Math.max(1, Math.min(firstCount, maxCount));
  }

  add(c: CounterSnapshot): void {
    const len = CounterStateType.encode(c).finish().length;
    const size = 1 + varintSize(len) + len;
    if (size > this.budget) {
      this.oversized.push(c);
      return;
    }
    if (this.current.length > 0 && (this.bytes + size > this.budget || this.current.length >= this.count)) {
      this.ready.push(this.current);
      this.current = [];
      this.bytes = 0;
      this.count = Math.min(this.maxCount, this.count * 2);
    }
    this.current.push(c);
    this.bytes += size;
  }

  /** Counters added, in the chunks not yet full and the ready ones. */
  get pending(): number {
    return this.current.length + this.ready.reduce((n, c) => n + c.length, 0);
  }

  /** Ends the chunk being filled: it is ready too (an empty one only if nothing else is). */
  flush(): void {
    if (this.current.length > 0 || this.ready.length === 0) this.ready.push(this.current);
    this.current = [];
    this.bytes = 0;
  }
}

/** Batches of a list of counters already taken, `size` at a time. */
function listed(counters: readonly CounterSnapshot[], size: number): Batches {
  let at = 0;
  return () => {
    const batch = counters.slice(at, at + size);
    at += batch.length;
    return { counters: batch, more: at < counters.length };
  };
}

/**
 * Planned moves lose nothing: when an assignment takes ranges from this server, it stops serving
 * them (ownership changed first), takes their counters out of the engine, and sends them to each
 * new owner, which waits for the last chunk (`done`) before serving those ranges. The receiving
 * side merges what arrives and marks the ranges ready.
 */
export class Handoff {
  private readonly sending = new Set<Promise<void>>();
  /** Counters of back-to-back moves being passed on (see `receive`), by the member they go to. */
  private readonly passing = new Map<string, Set<Promise<void>>>();

  constructor(private readonly opts: HandoffOptions) {}

  /**
   * Hands the counters of `change.lost` to their new owners; resolves when every one is sent.
   * Each new owner's ranges are taken out of the store and sent a slice at a time, yielding to the
   * event loop between slices (the ranges are no longer served: ownership changed first).
   */
  send(change: OwnershipChange): Promise<void> {
    if (change.lost.length === 0) return Promise.resolve();
    const byTo = new Map<string, { to: Member; ranges: Move[] }>();
    for (const m of change.lost) {
      const g = byTo.get(m.to.id);
      if (g) g.ranges.push(m);
      else byTo.set(m.to.id, { to: m.to, ranges: [m] });
    }
    const all = Promise.all(
      [...byTo.values()].map((g) =>
        this.sendTo(
          change.generation,
          g.to,
          g.ranges,
          this.taking(g.ranges, change.generation),
          true,
          this.takePools(g.ranges),
        ),
      ),
    ).then(() => {});
    return this.track(all);
  }

  /**
   * An unplanned move's old side: a server that kept its counters while cut off from etcd hands
   * `ranges` to `to`, which was given them in `generation` (newer than this server holds, so its
   * own view cannot say it lost them: it has stopped deciding, see ClusterNode.reclaim). The last
   * chunk marks the ranges ready there.
   */
  surrender(generation: number, to: Member, ranges: readonly PointRange[]): Promise<void> {
    return this.track(
      this.sendTo(
        generation,
        to,
        ranges,
        this.taking(ranges, generation, false),
        true,
        this.takePools(ranges),
      ),
    );
  }

  /** The state of the pools whose key is in `ranges`, taken out as their counters are. */
  private takePools(ranges: readonly PointRange[]): PoolTransfer[] {
    return this.opts.pools?.()?.take(ranges, this.opts.clock.now()) ?? [];
  }

  /**
   * The counters of `ranges` out of the store, `slice` counters visited per batch; with
   * `keepOwned`, those this server owns again by then stay (see notOwnedAgain).
   */
  private taking(ranges: readonly PointRange[], generation: number, keepOwned = true): Batches {
    const { store, clock } = this.opts;
    const slice = this.opts.slice ?? 500;
    const take = store.takeRanges(ranges, keyPoint);
    // Slices ramp up as chunks do (FIRST_CHUNK): the first snapshots and their sizing run cold too.
    let budget = Math.min(FIRST_CHUNK, slice);
    return () => {
      const b = take.next(clock.now(), budget);
      budget = Math.min(slice, budget * 2);
      return { counters: keepOwned ? this.notOwnedAgain(b.counters, generation) : b.counters, more: b.more };
    };
  }

  /**
   * The take runs over many turns: if a newer assignment gave some of the ranges back to this
   * server meanwhile, the counters it owns again go back into the store (whole: they never left)
   * instead of to the old receiver, which would only pass them back.
   */
  private notOwnedAgain(counters: CounterSnapshot[], generation: number): CounterSnapshot[] {
    const { ownership, store, clock, log } = this.opts;
    if (ownership.generation() === generation || counters.length === 0) return counters;
    const back: CounterSnapshot[] = [];
    const out: CounterSnapshot[] = [];
    for (const c of counters) (ownership.owns(keyPoint(c.shard || c.key)) ? back : out).push(c);
    if (back.length > 0) {
      try {
        store.putCounters(back, clock.now());
      } catch (err) {
        if (!(err instanceof CapacityError)) throw err;
        log.error({ generation, lost: back.length }, "handoff: counters owned again found no room back");
      }
    }
    return out;
  }

  private track(p: Promise<void>): Promise<void> {
    this.sending.add(p);
    void p.finally(() => this.sending.delete(p));
    return p;
  }

  /** Resolves once no counters are being passed on to member `to` (each is sent or given up). */
  private async passedOn(to: string): Promise<void> {
    for (let set = this.passing.get(to); set !== undefined && set.size > 0; set = this.passing.get(to))
      await Promise.all([...set]);
  }

  /**
   * Waits while counters of `ranges` are still coming to this server from the move before this
   * one (ClusterOwnership.relayingFor): their sender's done, or their deadline. Resolves to the
   * milliseconds waited.
   */
  private async relayed(to: string, generation: number, ranges: readonly PointRange[]): Promise<number> {
    const { ownership, clock, log } = this.opts;
    const started = clock.elapsed();
    const until = (waiting: readonly PendingRange[]) => Math.max(...waiting.map((p) => p.deadline));
    let waiting = ownership.relayingFor(ranges, to);
    if (waiting.length > 0)
      log.info(
        {
          to,
          generation,
          from: [...new Set(waiting.map((p) => `${p.from || "any"}@${p.generation}`))],
          waitMs: until(waiting) - started,
        },
        "handoff: the last chunk waits for counters of these ranges still coming from their previous owner",
      );
    for (; waiting.length > 0; waiting = ownership.relayingFor(ranges, to))
      await ownership.changed(Math.max(1, until(waiting) - clock.elapsed()));
    return clock.elapsed() - started;
  }

  /** Resolves once no handoff is being sent. */
  async idle(): Promise<void> {
    while (this.sending.size > 0) await Promise.all([...this.sending]);
  }

  private async sendTo(
    generation: number,
    to: Member,
    ranges: readonly PointRange[],
    batches: Batches,
    /** Whether the last chunk says `done` (marks `ranges` ready at the receiver). */
    marksDone = true,
    /** Pools whose key is in `ranges`: they go with the last chunk. */
    pools: readonly PoolTransfer[] = [],
  ): Promise<void> {
    const { selfId, log, clock } = this.opts;
    const yieldTurn = this.opts.yieldTurn ?? nextTurn;
    let giveUpAt = clock.elapsed() + (this.opts.giveUpMs ?? HANDOFF_GIVE_UP_MS);
    const wire = ranges.map((r) => ({ start: r.start, end: r.end }));
    const started = clock.elapsed();
    // The request's other fields, plus room for the varints of `generation` and `done`.
    const header =
      HandoffRequestType.encode({
        generation,
        from: selfId,
        ranges: wire,
        counters: [],
        done: true,
        pools,
      }).finish().length + 16;
    let sent = 0;
    let tooBig = 0;
    const cut = new ChunkCutter(
      (this.opts.maxMessageBytes ?? PEER_MAX_MESSAGE_BYTES) - header,
      this.opts.chunk ?? 2000,
      FIRST_CHUNK,
    );
    for (let first = true; ; first = false) {
      if (!first) await yieldTurn();
      const { counters: slice, more } = batches();
      for (const c of slice) cut.add(c);
      if (cut.oversized.length > 0) {
        const oversized = cut.oversized;
        cut.oversized = [];
        tooBig += oversized.length;
        this.opts.onSent?.(to.id, oversized.length, false);
        log.error(
          { to: to.id, generation, lost: oversized.length, keys: oversized.slice(0, 5).map((c) => c.key) },
          "handoff: counters larger than a message on their own are not sent (the new owner rebuilds them from gateways)",
        );
      }
      // Full chunks go as slices fill them; the last (done) once the ranges are all taken.
      if (!more) cut.flush();
      const chunks = cut.ready;
      cut.ready = [];
      for (let n = 0; n < chunks.length; n++) {
        const part = chunks[n]!;
        const done = marksDone && !more && n === chunks.length - 1;
        // Nothing to carry and nothing to mark: no call (the last chunk goes even when empty).
        if (part.length === 0 && !done) continue;
        const takenAt = clock.elapsed();
        // Counters of these ranges still coming to this server from a move before: the chunk that
        // ends this move waits for them (they pass on first), and the wait is not retry time.
        if (done) giveUpAt += await this.relayed(to.id, generation, wire);
        for (;;) {
          let problem: string;
          // Sent again after a wait, the snapshots age by it (their times are relative).
          const age = clock.elapsed() - takenAt;
          const counters = age > 0 ? part.map((c) => agedSnapshot(c, age)) : part;
          // The chunk that ends the move waits for counters being passed on to the same member: once
          // it says done there, that member refuses any chunk of the move still to come (A -> B, then
          // B -> A at once: B got A's counters after its own move back began; sent after its done,
          // A refused them and the counts were lost).
          if (done) await this.passedOn(to.id);
          const req: HandoffRequest = { generation, from: selfId, ranges: wire, counters, done };
          // The pools' backends age by the wait as the counters do.
          if (done && pools.length > 0) req.pools = age > 0 ? pools.map((p) => agedPool(p, age)) : [...pools];
          try {
            const res = await this.opts.peer(to.address).handoff(req, { deadlineMs: 5000 });
            if (!res.error?.code) break;
            problem = res.error.message;
          } catch (err) {
            problem = (err as Error).message;
          }
          if (clock.elapsed() >= giveUpAt) {
            // The rest of the ranges' counters still come out of the store (this server no longer
            // owns them), a slice per turn, and count as lost with those taken and not sent.
            let lost = chunks.slice(n).reduce((a, c) => a + c.length, 0) + cut.pending;
            for (let rest = more; rest; ) {
              await yieldTurn();
              const b = batches();
              lost += b.counters.length;
              rest = b.more;
            }
            this.opts.onSent?.(to.id, lost, false);
            log.error(
              { to: to.id, generation, sent, lost, problem },
              "handoff given up: the new owner will rebuild these counts from gateways",
            );
            return;
          }
          // Ref'd, as before: a handoff being retried keeps a leaving process until it is sent or given up.
          await sleep(clock, this.opts.retryMs ?? 100, { ref: true });
        }
        sent += part.length;
      }
      if (!more) break;
    }
    this.opts.onSent?.(to.id, sent, true);
    log.info(
      {
        to: to.id,
        generation,
        counters: sent,
        tooBig,
        ranges: ranges.length,
        ms: clock.elapsed() - started,
        ...(pools.length > 0 ? { pools: pools.map((p) => p.name) } : {}),
      },
      "handed slices over",
    );
  }

  /** The receiving side of one Handoff call. */
  receive(req: HandoffRequest): HandoffResponse {
    const { ownership, store, clock, log } = this.opts;
    const generation = ownership.generation();
    if (req.generation > generation) {
      return {
        accepted: 0,
        generation,
        error: {
          code: ErrorCode.SLICE_NOT_READY,
          message: `this server is on generation ${generation}, behind the handoff's ${req.generation}; retry`,
        },
      };
    }
    const mine: CounterSnapshot[] = [];
    // Counters of ranges that moved on from here (back-to-back moves: A -> B, then B -> C before
    // A's chunks reached B), by their owner now. B is the previous owner of C's move, so B passes
    // them on as a handoff of its own; dropping them would lose the counts while A hears "accepted".
    const onward = new Map<string, { to: Member; counters: CounterSnapshot[] }>();
    let refused = 0;
    const refusal = ownership.handoffRefusal(req.from);
    for (const s of req.counters) {
      const shard = s.shard || s.key;
      const point = keyPoint(shard);
      if (snapshotProblem(s) !== undefined) refused++;
      else if (ownership.owns(point)) {
        // Counters of this server's ranges come only from the member it gained them from, for a
        // move still pending here; those of ranges owned elsewhere are passed on, and checked so
        // at their owner (with this server as the sender).
        const why = refusal(point);
        if (why !== undefined) {
          throw new PermissionDeniedError(
            `handoff from ${JSON.stringify(req.from.slice(0, 128))} refused: counter ${JSON.stringify(s.key.slice(0, 100))}: ${why}; nothing of the chunk was taken`,
          );
        }
        mine.push(s);
      } else {
        // To the member this server lost the range to while waiting for these counters (it waits
        // for them from this server), else to the owner now.
        const owner = ownership.relayTo(req.from, point) ?? ownership.ownerOf(shard);
        if (owner === undefined || owner.self) {
          refused++;
          continue;
        }
        const g = onward.get(owner.id);
        if (g) g.counters.push(s);
        else onward.set(owner.id, { to: { id: owner.id, address: owner.address }, counters: [s] });
      }
    }
    let accepted: number;
    try {
      accepted = store.putCounters(mine, clock.now());
    } catch (err) {
      if (!(err instanceof CapacityError)) throw err;
      return { accepted: 0, generation, error: { code: ErrorCode.COUNTERS_EXHAUSTED, message: err.message } };
    }
    if (refused > 0) {
      log.warn(
        { from: req.from, refused, generation: req.generation },
        "handoff: malformed counters dropped",
      );
    }
    for (const g of onward.values()) {
      log.info(
        { from: req.from, to: g.to.id, counters: g.counters.length, generation },
        "handoff: counters of ranges that moved on passed to their owner",
      );
      // `done` stays false: the new owner's wait for this server's own handoff ends with that one,
      // which is held until this is sent (`passedOn`).
      const passing = this.track(
        this.sendTo(generation, g.to, [], listed(g.counters, this.opts.slice ?? 500), false),
      );
      const set = this.passing.get(g.to.id) ?? new Set<Promise<void>>();
      this.passing.set(g.to.id, set);
      set.add(passing);
      void passing.finally(() => {
        set.delete(passing);
        if (set.size === 0 && this.passing.get(g.to.id) === set) this.passing.delete(g.to.id);
      });
      accepted += g.counters.length;
    }
    this.receivePools(req, refusal);
    this.opts.onReceived?.(req.from, accepted);
    if (req.done) ownership.handoffDone(req.from, req.generation, req.ranges);
    return { accepted, generation };
  }

  /**
   * The pools of a handoff: each checked (a bad one is dropped whole, logged: the new owner
   * relearns it from the next reports), taken only for a pool key in this server's ranges and from
   * the member it gained them from, as counters are.
   */
  private receivePools(req: HandoffRequest, refusal: (point: number) => string | undefined): void {
    const { ownership, clock, log } = this.opts;
    const desk = (req.pools?.length ?? 0) > 0 ? this.opts.pools?.() : undefined;
    if (desk === undefined) return;
    const taken: string[] = [];
    for (const p of req.pools!) {
      const problem = poolTransferProblem(p);
      const point = keyPoint(poolShardKey(p.name));
      const why =
        problem ?? (ownership.owns(point) ? refusal(point) : "its key is not in this server's ranges");
      if (why !== undefined) {
        log.warn({ from: req.from, pool: String(p.name).slice(0, 100), why }, "handoff: pool state dropped");
        continue;
      }
      if (desk.put(p, clock.now())) taken.push(p.name);
    }
    if (taken.length > 0) log.info({ from: req.from, pools: taken }, "handoff: pool state taken over");
  }
}

/** `p` as seen `ms` later: its backends' reports older by that much. */
function agedPool(p: PoolTransfer, ms: number): PoolTransfer {
  return { ...p, backends: p.backends.map((b) => ({ ...b, ageMs: b.ageMs + ms })) };
}
