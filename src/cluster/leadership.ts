import type { Etcd3, Watcher } from "etcd3";
import { type Clock, every, type Timer } from "../core/clock.js";
import type { Log } from "./log.js";
import type { Membership } from "./membership.js";

export interface LeadershipOptions {
  client: Etcd3;
  /** The key whose holder leads, e.g. `/shardlimit/assigner/leader`. */
  key: string;
  /** This candidate's id (the key's value while it leads). */
  id: string;
  /** The candidate's registration: the leader key is bound to its lease, so leadership ends with it. */
  membership: Membership;
  /** Times the campaign's retry; `leading()` reads freshness from the membership's clock. */
  clock: Clock;
  log: Log;
  onChange?: (leading: boolean) => void;
  /**
   * How often a candidate campaigns (or, leading, re-reads the key) whatever its watch says: the
   * safety net for a watch event that never came. Default 1000 ms; 0 turns it off.
   */
  recheckMs?: number;
}

/**
 * Leader election on one etcd key bound to the candidate's membership lease: created only if
 * absent (a transaction), released when the lease ends. Every write the leader makes is fenced
 * by the same key (`fencedPut`): the transaction fails unless the key still holds this id under
 * this lease, so a deposed leader cannot write. `leading()` also requires the lease to be fresh
 * by our own clock, so a leader cut off from etcd stops acting before its lease can expire.
 *
 * The watch on the key is only a fast path. etcd cancels a watch whose resume revision was
 * compacted away while the client was disconnected; the etcd3 client then emits `error` on it and
 * drops it. Without a handler the candidate would never see the leader key vanish again and, once
 * the leader died, nobody would campaign. So an `error` re-creates the watch and campaigns, a
 * reconnected watch campaigns (the leader may have gone meanwhile), and a periodic campaign
 * (`recheckMs`) covers any event lost some other way.
 */
export class Leadership {
  private held = false;
  private leaseId = "";
  private watcher: Watcher | undefined;
  private stopped = false;
  private retry: Timer | undefined;
  private recheck: Timer | undefined;
  private rewatch: Timer | undefined;

  constructor(private readonly opts: LeadershipOptions) {}

  leading(): boolean {
    return this.held && !this.stopped && this.opts.membership.registrationFresh();
  }

  async start(): Promise<void> {
    await this.watch();
    await this.campaign();
    const ms = this.opts.recheckMs ?? 1000;
    // Ref'd, as the campaign retry: a candidate keeps campaigning until it is stopped.
    if (ms > 0 && !this.stopped)
      this.recheck = every(this.opts.clock, ms, () => void this.campaign(), { ref: true });
  }

  /** (Re)creates the watch on the leader key; a failure to create it is retried. */
  private async watch(): Promise<void> {
    if (this.stopped) return;
    const { client, key, id, log } = this.opts;
    let w: Watcher;
    try {
      w = await client.watch().key(key).create();
    } catch (err) {
      log.warn({ err: (err as Error).message }, "cannot watch the leader key; retrying");
      this.scheduleRewatch();
      return;
    }
    if (this.stopped) {
      await w.cancel().catch(() => {});
      return;
    }
    this.watcher = w;
    // The leader key vanished (leader left or its lease expired): campaign again.
    w.on("delete", () => void this.campaign());
    w.on("put", (kv) => {
      if (kv.value.toString() !== id && this.held) this.set(false);
    });
    // Back after a disconnect: events replayed from the resume revision arrive anyway, but a
    // campaign now costs one transaction and does not depend on them.
    w.on("connected", () => void this.campaign());
    w.on("error", (err) => {
      // Cancelled by etcd (e.g. its resume revision was compacted): the client has dropped it.
      log.warn({ err: err.message, key }, "leader watch cancelled by etcd; watching again");
      if (this.watcher === w) this.watcher = undefined;
      this.scheduleRewatch(0);
    });
  }

  private scheduleRewatch(ms = 500): void {
    if (this.stopped || this.rewatch) return;
    this.rewatch = this.opts.clock.after(
      ms,
      () => {
        this.rewatch = undefined;
        // Watch first, then campaign: a delete after the campaign's read is then seen by the watch.
        void this.watch().then(() => this.campaign());
      },
      { ref: true },
    );
  }

  private set(leading: boolean): void {
    if (this.held === leading) return;
    this.held = leading;
    this.opts.log.info({ id: this.opts.id, leading }, leading ? "elected leader" : "no longer leader");
    this.opts.onChange?.(leading);
  }

  private async campaign(): Promise<void> {
    if (this.stopped) return;
    const { client, key, id, membership, log } = this.opts;
    try {
      this.leaseId = await membership.leaseId();
      const res = await client
        .if(key, "Create", "==", 0)
        .then(client.put(key).value(id).lease(this.leaseId))
        .else(client.get(key))
        .commit();
      if (res.succeeded) {
        this.set(true);
        return;
      }
      const holder = res.responses[0]?.response_range?.kvs?.[0];
      const ours = holder?.value.toString() === id && String(holder?.lease) === this.leaseId;
      this.set(ours);
    } catch (err) {
      log.warn({ err: (err as Error).message }, "leader campaign failed; retrying");
      if (!this.retry && !this.stopped) {
        // Ref'd, as before: a candidate keeps campaigning until it is stopped.
        this.retry = this.opts.clock.after(
          500,
          () => {
            this.retry = undefined;
            void this.campaign();
          },
          { ref: true },
        );
      }
    }
  }

  /**
   * Puts `value` at `key` only if this candidate still holds leadership, and, when `previous` is
   * given, only if `key` still holds exactly that (null: absent), so a leader whose view is behind
   * cannot overwrite what it has not seen. False if either check fails.
   */
  async fencedPut(key: string, value: string, previous?: string | null): Promise<boolean> {
    if (!this.leading()) return false;
    const { client } = this.opts;
    const txn = client
      .if(this.opts.key, "Value", "==", this.opts.id)
      .and(this.opts.key, "Lease", "==", this.leaseId);
    if (previous === null) txn.and(key, "Create", "==", 0);
    else if (previous !== undefined) txn.and(key, "Value", "==", previous);
    const res = await txn.then(client.put(key).value(value)).else(client.get(this.opts.key)).commit();
    if (!res.succeeded) {
      const holder = res.responses[0]?.response_range?.kvs?.[0];
      if (holder?.value.toString() !== this.opts.id || String(holder?.lease) !== this.leaseId)
        this.set(false);
    }
    return res.succeeded;
  }

  /** Gives leadership up (deletes the key if it is ours) and stops campaigning. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.retry?.cancel();
    this.recheck?.cancel();
    this.rewatch?.cancel();
    await this.watcher?.cancel().catch(() => {});
    if (this.held) {
      const { client } = this.opts;
      await client
        .if(this.opts.key, "Value", "==", this.opts.id)
        .then(client.delete().key(this.opts.key))
        .commit()
        .catch(() => {});
    }
    this.set(false);
  }
}
