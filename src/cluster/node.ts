import type { Etcd3 } from "etcd3";
import { type Clock, every, sleep, type Timer } from "../core/clock.js";
import type { Assignment } from "../keyspace/assignment.js";
import type { Forwarder } from "../server/router.js";
import { AssignerStack } from "./assigner-stack.js";
import { AssignmentView } from "./assignment-view.js";
import { ClusterOwnership } from "./cluster-ownership.js";
import { connectEtcd } from "./etcd-client.js";
import { BatchingForwarder } from "./forwarder.js";
import { type CounterStore, Handoff } from "./handoff.js";
import { loadPrefix } from "./load.js";
import type { Log } from "./log.js";
import { Membership } from "./membership.js";
import { PeerPool } from "./peers.js";

export interface ClusterOptions {
  /** etcd client URLs. */
  etcd: string[];
  /** Key prefix of the cluster in etcd, ending in `/`. */
  prefix: string;
  /** This server's member id (unique in the cluster). */
  id: string;
  capacity: number;
  /** Lease TTL of the registration, seconds: a crashed server's slices move this long after. */
  leaseTtlSeconds: number;
  /** Whether this server campaigns to run the assigner. */
  assigner: boolean;
  /** How long a range given by a live member waits for its counters. */
  handoffTimeoutMs: number;
  /** How often this server publishes its per-slice load (0: never). */
  loadIntervalMs?: number;
  /** How often the assigner, when this server runs it, balances load (0: never). */
  rebalanceIntervalMs?: number;
}

export interface ClusterHooks {
  /** A new assignment was installed; `lagMs` since the assigner wrote it (wall clocks). */
  onAssignment?: (a: Assignment, lagMs: number | undefined) => void;
  onHandoffSent?: (to: string, counters: number, ok: boolean) => void;
  onHandoffReceived?: (from: string, counters: number) => void;
  onForward?: (owner: string, parts: number, ok: boolean) => void;
}

/**
 * A server's membership of the cluster: registration, the assignment it serves from, leader
 * election and the assigner (when enabled), forwarding to owners, and counter handoff. The
 * request path sees only `ownership` and `forwarder`.
 */
export class ClusterNode {
  readonly ownership: ClusterOwnership;
  readonly forwarder: Forwarder;
  readonly handoff: Handoff;
  private readonly client: Etcd3;
  private membership: Membership | undefined;
  private readonly view: AssignmentView;
  private stack: AssignerStack | undefined;
  private loadTimer: Timer | undefined;
  /**
   * Real gRPC channels, whose deadlines are wall-clock times: they stay on the system clock even
   * when this node runs on another (a virtual time would make every deadline nonsense).
   */
  private readonly peers = new PeerPool();

  constructor(
    private readonly opts: ClusterOptions,
    store: CounterStore,
    private readonly deps: { clock: Clock; log: Log; hooks?: ClusterHooks },
  ) {
    const { clock, log } = deps;
    const hooks = deps.hooks ?? {};
    this.client = connectEtcd(opts.etcd);
    this.ownership = new ClusterOwnership({
      selfId: opts.id,
      clock,
      handoffTimeoutMs: opts.handoffTimeoutMs,
    });
    const peer = (address: string) => this.peers.get(address);
    this.forwarder = new BatchingForwarder({ peer, onCall: hooks.onForward });
    this.handoff = new Handoff({
      selfId: opts.id,
      store,
      ownership: this.ownership,
      peer,
      clock,
      log,
      onSent: hooks.onHandoffSent,
      onReceived: hooks.onHandoffReceived,
    });
    this.view = new AssignmentView({
      client: this.client,
      prefix: opts.prefix,
      clock,
      log,
      onChange: (stored) => {
        if (stored) this.install(stored.assignment);
        this.stack?.assigner.kick();
      },
    });
  }

  private install(a: Assignment): void {
    const change = this.ownership.update(a);
    if (!change) return;
    const lag = a.writtenAt !== undefined ? this.deps.clock.now() - a.writtenAt : undefined;
    this.deps.hooks?.onAssignment?.(a, lag);
    this.deps.log.info(
      {
        generation: a.generation,
        members: a.members.length,
        lost: change.lost.length,
        gained: change.gained.length,
        awaiting: change.pending.length,
        lagMs: lag,
      },
      "assignment installed",
    );
    this.peers.retain(new Set(a.members.map((m) => m.address)));
    void this.handoff.send(change);
  }

  /**
   * Registers with `address` (host:port where gateways and other servers reach this server's
   * gRPC endpoint, known once it is bound), learns the assignment, and campaigns for the
   * assigner if enabled.
   */
  async start(address: string): Promise<void> {
    const { opts } = this;
    const { clock, log } = this.deps;
    const membership = new Membership({
      client: this.client,
      prefix: opts.prefix,
      self: { id: opts.id, address, capacity: opts.capacity, startedAt: clock.now() },
      ttlSeconds: opts.leaseTtlSeconds,
      clock,
      log,
      onMembers: (members) => this.stack?.assigner.setMembers(members),
    });
    this.membership = membership;
    if (opts.assigner) {
      this.stack = new AssignerStack({
        client: this.client,
        prefix: opts.prefix,
        id: opts.id,
        membership,
        view: this.view,
        clock,
        log,
        loadIntervalMs: opts.loadIntervalMs ?? 2000,
        rebalanceIntervalMs: opts.rebalanceIntervalMs ?? 10_000,
      });
    }
    await membership.start();
    await this.view.start();
    this.stack?.assigner.setMembers(membership.current);
    await this.stack?.start();
    this.publishLoadEvery(opts.loadIntervalMs ?? 2000);
  }

  /** Publishes this server's per-slice load every `ms`, bound to its lease. */
  private publishLoadEvery(ms: number): void {
    if (!(ms > 0)) return;
    this.ownership.takeLoad();
    const { clock, log } = this.deps;
    this.loadTimer = every(clock, ms, () => {
      const l = this.ownership.takeLoad();
      const record = { id: this.opts.id, generation: l.generation, at: clock.now(), ranges: l.ranges };
      this.membership
        ?.putLeased(`${loadPrefix(this.opts.prefix)}${this.opts.id}`, JSON.stringify(record))
        .catch((err: Error) => log.debug({ err: err.message }, "cannot publish load"));
    });
  }

  /** Members as registered in etcd (for status). */
  members() {
    return this.membership?.current ?? [];
  }

  /** Whether this server holds no slice in the current assignment. */
  private holdsNothing(): boolean {
    const a = this.ownership.current();
    if (!a) return true;
    const self = a.members.findIndex((m) => m.id === this.opts.id);
    return self < 0 || !a.owners.includes(self);
  }

  /**
   * A planned leave, step one: announce draining, wait until the assignment has moved every slice
   * away and their counters are handed over (or `timeoutMs` passes). Keeps serving meanwhile:
   * calls for moved keys are forwarded to their new owners.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const { clock } = this.deps;
    const until = clock.now() + timeoutMs;
    try {
      if (!this.membership) return true;
      await this.membership.setDraining();
    } catch (err) {
      this.deps.log.warn(
        { err: (err as Error).message },
        "cannot announce draining; leaving without handoff",
      );
      return false;
    }
    while (!this.holdsNothing() && clock.now() < until) await this.ownership.changed(until - clock.now());
    await Promise.race([
      this.handoff.idle(),
      // Ref'd, as before: the drain's deadline stands even once nothing else is pending.
      sleep(clock, Math.max(0, until - clock.now()), { ref: true }),
    ]);
    return this.holdsNothing();
  }

  /** Leaves: gives up leadership, revokes the registration, closes connections. */
  async stop(): Promise<void> {
    this.loadTimer?.cancel();
    await this.stack?.stop();
    await this.view.stop();
    await this.membership?.stop();
    this.peers.close();
    this.client.close();
  }
}
