import type { Etcd3 } from "etcd3";
import { type Clock, every, sleep, systemClock, type Timer } from "../core/clock.js";
import type { CounterSource } from "../core/engine.js";
import { type Assignment, type Member, type Move, rangesOf } from "../keyspace/assignment.js";
import { buddyOf } from "../keyspace/buddy.js";
import { keyPoint } from "../keyspace/hash.js";
import { DEFAULT_INPUT_LIMITS, type InputLimits } from "../protocol/input-limits.js";
import { ErrorCode, itemError } from "../protocol/item-errors.js";
import type {
  InspectResponse,
  PointRange,
  ReclaimRequest,
  ReclaimResponse,
  ReplicateRequest,
  ReplicateResponse,
  StandbyRequest,
  StandbyResponse,
} from "../protocol/messages.js";
import { type CallMetadata, connect, type RateLimiterRpc } from "../protocol/rpc.js";
import type { EtcdAccess } from "../security/etcd-access.js";
import { type ChannelSecurity, INSECURE_CHANNEL } from "../security/tls.js";
import type { Forwarder } from "../server/router.js";
import { AssignerStack } from "./assigner-stack.js";
import { AssignmentView } from "./assignment-view.js";
import { ClusterOwnership } from "./cluster-ownership.js";
import { connectEtcd } from "./etcd-client.js";
import { BatchingForwarder } from "./forwarder.js";
import { type CounterStore, Handoff, type PoolHandover } from "./handoff.js";
import { type GlobalStatus, loadPrefix, type PoolStatus } from "./load.js";
import type { Log } from "./log.js";
import { type MemberRecord, Membership } from "./membership.js";
import { connectPeer, PeerPool, type PeerRpc } from "./peers.js";
import { type ChangedCounters, DEFAULT_REPLICATE_INTERVAL_MS, Replicator } from "./replicator.js";
import { StandbyCopies } from "./standby.js";
import { StandbyStore } from "./standby-store.js";

/** How often the lease guard looks, and how long it waits for a peer's answer. */
const GUARD_INTERVAL_MS = 250;
/**
 * How often a registered server reads the assignment from etcd directly (see confirmWithEtcd):
 * how long a silently dead watch can leave it on an old view. One small range read per second.
 */
const READ_EVERY_MS = 1000;
/** How long a Reclaim waits for the previous owner's answer (a live one answers at once). */
const RECLAIM_DEADLINE_MS = 1000;
/**
 * How long before a wait for a live previous owner's handoff ends its ranges' standby copies are
 * fetched instead: a Standby call's deadline, and room to put them.
 */
const STANDBY_LEAD_MS = 1500;

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
  /** How often changed counters are copied to this server's buddy (0: never). Default 200 ms. */
  replicateIntervalMs?: number;
  /** Most standby copies this server keeps for the members whose buddy it is (default 5M). */
  maxStandbyCopies?: number;
  /** TLS and user/password auth towards etcd (plaintext, no auth when absent). */
  etcdAccess?: EtcdAccess;
  /**
   * The server's input bounds, which peers must keep to as well: the largest message both ways
   * (handoff chunks are cut below it) and the parts and items of one Forward call. Default: the
   * default input limits.
   */
  limits?: InputLimits;
}

export interface ClusterHooks {
  /** A new assignment was installed; `lagMs` since the assigner wrote it (wall clocks). */
  onAssignment?: (a: Assignment, lagMs: number | undefined) => void;
  onHandoffSent?: (to: string, counters: number, ok: boolean) => void;
  onHandoffReceived?: (from: string, counters: number) => void;
  onForward?: (owner: string, parts: number, ok: boolean) => void;
  /** Counters sent to the buddy as standby copies (`ok` false: the call failed, retried later). */
  onReplicated?: (to: string, counters: number, ok: boolean) => void;
  /** A dead member's ranges taken over from standby copies (`counters` restored). */
  onStandbyRestored?: (from: string, counters: number) => void;
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
  /** The standby copies this server keeps as a buddy. */
  readonly standbyStore: StandbyStore;
  private readonly standby: StandbyCopies;
  private readonly replicator: Replicator | undefined;
  private readonly client: Etcd3;
  private membership: Membership | undefined;
  private readonly view: AssignmentView;
  private stack: AssignerStack | undefined;
  private loadTimer: Timer | undefined;
  /**
   * Real gRPC channels, whose deadlines are wall-clock times: they stay on the system clock even
   * when this node runs on another (a virtual time would make every deadline nonsense).
   */
  private readonly peers: PeerPool;
  /** Channels for asking peers their generation while this server's lease may have expired. */
  private readonly viewClients: PeerPool<RateLimiterRpc>;
  private guardTimer: Timer | undefined;
  /** Waits for a live previous owner's handoff (`awaitLiveOwner`), cancelled on stop. */
  private readonly reclaimTimers = new Set<Timer>();
  private probing = false;
  /** The newest generation a peer has reported: this server serves nothing older. */
  private newestSeen = 0;
  /** A direct read of the assignment under way, and when the last one began (`confirmWithEtcd`). */
  private confirming = false;
  private confirmedAt = Number.NEGATIVE_INFINITY;
  /** Where peers reach this server (known once started). */
  private address = "";

  constructor(
    private readonly opts: ClusterOptions,
    private readonly store: CounterStore,
    private readonly deps: {
      clock: Clock;
      log: Log;
      hooks?: ClusterHooks;
      /** A peer's generation (tests inject one); default: its GetClusterView. */
      peerGeneration?: (address: string) => Promise<number>;
      /** A peer's Peer service (tests inject one); default: a gRPC channel per address. */
      peer?: (address: string) => PeerRpc;
      /** The engine's changed counters: given, they are copied to this server's buddy. */
      changed?: ChangedCounters;
      /** How peers are dialled (Peer service and GetClusterView): TLS when the server has it. */
      channel?: ChannelSecurity;
      /** Per outbound call to a peer: this server's bearer token (`--token-file`). */
      metadata?: CallMetadata;
      /** Pools this server holds live state for (issue 14), published with its load. */
      pools?: () => PoolStatus[];
      /** The pools, whose state goes with their key in a handoff (issue 14). */
      poolHandover?: () => PoolHandover | undefined;
      /** With --global-tier: the link and the global keys this server divides (issue 14), published with its load. */
      global?: () => GlobalStatus | undefined;
    },
  ) {
    const { clock, log } = deps;
    const hooks = deps.hooks ?? {};
    const channel = deps.channel ?? INSECURE_CHANNEL;
    this.viewClients = new PeerPool<RateLimiterRpc>((address) =>
      connect(address, channel.options, systemClock, channel.credentials, deps.metadata),
    );
    this.client = connectEtcd(opts.etcd, opts.etcdAccess);
    this.ownership = new ClusterOwnership({
      selfId: opts.id,
      clock,
      handoffTimeoutMs: opts.handoffTimeoutMs,
      reclaimOrphans: true,
    });
    const limits = opts.limits ?? DEFAULT_INPUT_LIMITS;
    const maxMessageBytes = limits.maxMessageBytes;
    this.peers = new PeerPool(
      (address) =>
        deps.peer?.(address) ?? connectPeer(address, systemClock, maxMessageBytes, channel, deps.metadata),
    );
    const peer = (address: string) => this.peers.get(address);
    // The owner refuses a call past its bounds (every server of a cluster runs the same flags).
    this.forwarder = new BatchingForwarder({
      peer,
      onCall: hooks.onForward,
      maxBatch: Math.min(512, limits.maxBatch),
      maxItems: limits.maxForwardItems,
    });
    this.handoff = new Handoff({
      selfId: opts.id,
      store,
      ownership: this.ownership,
      peer,
      clock,
      log,
      maxMessageBytes,
      onSent: hooks.onHandoffSent,
      onReceived: hooks.onHandoffReceived,
      pools: deps.poolHandover,
    });
    this.standbyStore = new StandbyStore(clock, opts.maxStandbyCopies ?? 5_000_000);
    this.standby = new StandbyCopies({
      selfId: opts.id,
      ownership: this.ownership,
      store: this.standbyStore,
      peer,
      log,
      maxMessageBytes,
      maxCounters: limits.maxHandoffCounters,
    });
    const replicateMs = opts.replicateIntervalMs ?? DEFAULT_REPLICATE_INTERVAL_MS;
    this.replicator =
      deps.changed && replicateMs > 0
        ? new Replicator({
            selfId: opts.id,
            counters: deps.changed,
            ownership: this.ownership,
            peer,
            clock,
            log,
            intervalMs: replicateMs,
            maxMessageBytes,
            onSent: hooks.onReplicated,
          })
        : undefined;
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
    const held = this.ownership.current();
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
    const addresses = new Set(a.members.map((m) => m.address));
    this.peers.retain(addresses);
    this.viewClients.retain(addresses);
    void this.handoff.send(change);
    this.reclaimOrphans(a.generation, change.orphaned, [held, a.previous]);
    if (held === undefined) this.restoreOwn(a);
  }

  /**
   * The first assignment this process installs names it as owner of ranges: a process of the same
   * id held them before (it crashed and this one started before its lease expired, so nothing
   * moved). Their counters died with it: they start from the standby copies it left with its
   * buddy, as a dead member's ranges do, and wait for them (not ready). A member new to the
   * cluster has no copies: the call finds none.
   */
  private restoreOwn(a: Assignment): void {
    const self = a.members.find((m) => m.id === this.opts.id);
    if (self === undefined || buddyOf(a.members, self.id) === undefined) return;
    const ranges = rangesOf(a, self.id);
    if (ranges.length === 0) return;
    this.ownership.awaitOwn(ranges, a.generation, self.address);
    void this.takeOver(
      self,
      [a.members, ...(a.previous ? [a.previous.members] : [])],
      a.generation,
      ranges,
      "restarted: its counters died with its previous process",
      "standby-until-handoff",
    );
  }

  /**
   * Ranges this server was given from a server that is no longer a member (its lease expired)
   * wait for that server's counters: one cut off from etcd is alive and holds them (design
   * invariant 9: without them the new owner starts the window empty and admits up to twice the
   * limit to callers that cannot re-send totals, such as sync Check). A dead one does not answer:
   * the ranges start from the standby copies its buddy holds (`takeOver`), then are served.
   * `earlier` are assignments before this one, where the departed member's buddy is found.
   */
  private reclaimOrphans(
    generation: number,
    orphaned: readonly Move[],
    earlier: readonly (Assignment | undefined)[],
  ): void {
    const byFrom = new Map<string, Move[]>();
    for (const m of orphaned) {
      const list = byFrom.get(m.from.id);
      if (list) list.push(m);
      else byFrom.set(m.from.id, [m]);
    }
    for (const moves of byFrom.values()) {
      const from = moves[0]!.from;
      const ranges = moves.map((m) => ({ start: m.start, end: m.end }));
      const members = earlier
        .filter((x): x is Assignment => x?.members.some((m) => m.id === from.id) ?? false)
        .sort((x, y) => y.generation - x.generation)
        .map((x) => x.members);
      const takeOver = (why: string) => void this.takeOver(from, members, generation, ranges, why);
      this.peers
        .get(from.address)
        .reclaim(
          { generation, from: this.opts.id, address: this.address, ranges },
          { deadlineMs: RECLAIM_DEADLINE_MS },
        )
        .then(
          (res) => {
            if (res.error?.code) this.awaitLiveOwner(from, generation, res.error.message, takeOver);
            else
              this.deps.log.info(
                { from: from.id, generation },
                "reclaiming counters from the previous owner",
              );
          },
          (err: Error) => takeOver(err.message),
        );
    }
  }

  /**
   * The previous owner answered a reclaim but refused it: it is registered again (its view catching
   * up), or holds a newer generation than this server. Either way it is alive and its counters come
   * by the ordinary handoff once it installs the generation, so the ranges keep waiting for them.
   * Taking the standby copies at once (as before) served the ranges without the counts charged
   * since the last copy, then refused the handoff that carried them (the ranges no longer waited):
   * counts lost on a lease that merely lapsed under load. Should the handoff not come (the owner
   * skipped this generation, or died), the standby copies are taken shortly before the wait would
   * end and serve the ranges empty.
   */
  private awaitLiveOwner(
    from: Member,
    generation: number,
    answer: string,
    takeOver: (why: string) => void,
  ): void {
    const { clock, log } = this.deps;
    const deadline = this.ownership.waitingUntil(from.id, generation);
    log.info({ from: from.id, generation, answer }, "the previous owner is alive: waiting for its handoff");
    if (deadline === undefined) return;
    const timer = clock.after(Math.max(0, deadline - clock.elapsed() - STANDBY_LEAD_MS), () => {
      this.reclaimTimers.delete(timer);
      if (this.ownership.waitingUntil(from.id, generation) !== undefined)
        takeOver(`no handoff came from ${from.id} (it answered the reclaim: ${answer})`);
    });
    this.reclaimTimers.add(timer);
  }

  /**
   * A departed owner that does not hand its ranges over (or this server's own previous process):
   * they start from the standby copies its buddy (in `members`, the last assignment it was in)
   * holds, merged as a handoff's counters are, and are served. Without copies (no buddy, or the buddy does not answer either: two
   * faults) they are served as they are, rebuilt from gateways' re-sent totals.
   */
  private async takeOver(
    from: Member,
    /** The member lists of the assignments `from` was in, newest first (see `StandbyCopies.fetch`). */
    members: readonly (readonly Member[])[],
    generation: number,
    ranges: PointRange[],
    why: string,
    /** `standby-until-handoff` when a live member may still hand some of these ranges over. */
    source: CounterSource = "standby",
  ): Promise<void> {
    const { log, clock, hooks } = this.deps;
    try {
      const { buddy, copies } = await this.standby.fetch(from, members, generation, ranges);
      // Only what falls in the ranges taken over: a confused buddy's extra copies are not ours.
      const mine = copies.filter((c) => {
        const p = keyPoint(c.shard || c.key);
        return ranges.some((r) => p >= r.start && p < r.end);
      });
      const restored = mine.length > 0 ? this.store.putCounters(mine, clock.now(), source) : 0;
      hooks?.onStandbyRestored?.(from.id, restored);
      log.warn(
        { from: from.id, buddy, generation, ranges: ranges.length, restored, why },
        "ranges whose counters were lost start from the standby copies of their previous owner's buddy",
      );
    } catch (err) {
      log.warn(
        { from: from.id, generation, ranges: ranges.length, why, standby: (err as Error).message },
        "ranges whose counters were lost got no standby copies: serving them without their counts (rebuilt from gateways)",
      );
    }
    this.ownership.handoffDone(from.id, generation);
  }

  /** A member's standby copies (see `StandbyCopies.replicate`). */
  replicate(req: ReplicateRequest): ReplicateResponse {
    return this.standby.replicate(req);
  }

  /** A dead member's standby copies, asked for by a new owner of its ranges. */
  standbyCopies(req: StandbyRequest): StandbyResponse {
    return this.standby.standby(req);
  }

  /**
   * The other side of `reclaimOrphans`: a member that was given ranges of this server in a
   * generation this server does not hold. That generation exists, so this server is behind (cut
   * off from etcd, its lease expired): it stops deciding until its view catches up, as the lease
   * guard would, and hands the ranges' counters over. Refused when this server holds that
   * generation or a newer one and owns some of the ranges in it.
   */
  reclaim(req: ReclaimRequest): ReclaimResponse {
    const own = this.ownership;
    const generation = own.generation();
    if (req.generation <= generation) {
      for (const r of req.ranges) {
        if (own.owns(r.start) || own.owns(r.end - 1)) {
          return {
            generation,
            error: itemError(
              ErrorCode.NOT_OWNER,
              `this server owns range [${r.start}, ${r.end}) in generation ${generation} (the reclaim names ${req.generation})`,
            ),
          };
        }
      }
    } else if (this.membership?.registrationFresh()) {
      // Registered in etcd for sure (a keepalive within the TTL), so still a member for the
      // assigner: the caller's view is odd, or this server re-registered and its own view is
      // catching up; either way its counters follow by the ordinary handoff.
      return {
        generation,
        error: itemError(
          ErrorCode.NOT_OWNER,
          `this server's registration is live; its counters follow by handoff once it holds generation ${req.generation}`,
        ),
      };
    } else {
      this.newestSeen = Math.max(this.newestSeen, req.generation);
      this.setSuspended(true, `${req.from} reclaims ranges given to it in generation ${req.generation}`);
    }
    // Given away: an assignment that names this server their owner again without a move it saw
    // must wait for their counters, not take what is left here for them (ClusterOwnership.update).
    own.release(req.ranges);
    void this.handoff.surrender(req.generation, { id: req.from, address: req.address }, req.ranges);
    return { generation };
  }

  /**
   * Registers with `address` (host:port where gateways and other servers reach this server's
   * gRPC endpoint, known once it is bound), learns the assignment, and campaigns for the
   * assigner if enabled.
   */
  private limits: MemberRecord["limits"];
  private limitsWrite: Promise<void> = Promise.resolve();

  /**
   * `shardlimit inspect` asked of this member for a key `owner` owns: the owner's answer
   * (Peer.Inspect over the members' channel, within `deadlineMs`), marked as asked by this member;
   * undefined when the owner is this member.
   */
  inspectAt(
    owner: { id: string; address: string },
    key: string,
    deadlineMs: number,
  ): Promise<InspectResponse> | undefined {
    if (owner.id === this.opts.id) return undefined;
    const rpc = this.peers.get(owner.address);
    if (rpc.inspect === undefined) return Promise.reject(new Error("this peer channel has no Inspect"));
    return rpc.inspect({ key }, { deadlineMs }).then((res) => ({ ...res, askedBy: this.opts.id }));
  }

  /**
   * Publishes the limits this server serves in its membership record (shown by `status`). Writes
   * go one at a time, each with the latest state: two puts in flight could land in either order
   * and leave an older state in the record (a refusal, then the overrides applied after it).
   */
  publishLimits(limits: NonNullable<MemberRecord["limits"]>): Promise<void> {
    this.limits = limits;
    const write = this.limitsWrite.then(() => this.membership?.setLimits(this.limits));
    this.limitsWrite = write.catch(() => {});
    return write;
  }

  async start(address: string): Promise<void> {
    const { opts } = this;
    const { clock, log } = this.deps;
    this.address = address;
    const membership = new Membership({
      client: this.client,
      prefix: opts.prefix,
      self: {
        id: opts.id,
        address,
        capacity: opts.capacity,
        startedAt: clock.now(),
        ...(this.limits ? { limits: this.limits } : {}),
      },
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
    this.guardTimer = every(clock, GUARD_INTERVAL_MS, () => this.guard());
    this.replicator?.start();
  }

  /**
   * The lease guard (design invariant 9). While the last keepalive is younger than the TTL, etcd
   * surely still holds this server's registration, so nobody was given its slices. Once it is
   * older, the assigner may have written a generation without this server and a new owner may be
   * deciding its keys: it asks its peers (the other members of its assignment) for their
   * generation every GUARD_INTERVAL_MS and stops deciding (every key `not_owner`, not ready) when
   * one reports a newer generation or none answers. When every peer answers with no newer one,
   * etcd is unreachable for the cluster (or the peers are behind too) and nobody could have moved
   * anything: it keeps serving from the last assignment (static stability). It decides again once
   * its registration is fresh and its view has caught up with what peers reported.
   */
  private guard(): void {
    const m = this.membership;
    const own = this.ownership;
    if (!m || this.probing) return;
    if (m.registrationFresh()) {
      this.confirmWithEtcd();
      this.setSuspended(this.newestSeen > own.generation(), "lease fresh");
      return;
    }
    const a = own.current();
    if (!a) return; // owns nothing yet
    const peers = a.members.filter((x) => x.id !== this.opts.id).map((x) => x.address);
    this.probing = true;
    void Promise.allSettled(peers.map((p) => this.peerGeneration(p))).then((rs) => {
      this.probing = false;
      let reached = 0;
      for (const r of rs) {
        if (r.status !== "fulfilled") continue;
        reached++;
        this.newestSeen = Math.max(this.newestSeen, r.value);
      }
      if (m.registrationFresh()) this.setSuspended(this.newestSeen > own.generation(), "lease fresh");
      else if (reached === 0) this.setSuspended(true, "lease may have expired and no peer answers");
      else if (this.newestSeen > own.generation())
        this.setSuspended(true, "lease may have expired and a peer holds a newer generation");
      else this.setSuspended(false, "etcd unreachable but peers confirm the generation");
    });
  }

  /**
   * Reads the assignment from etcd itself (`AssignmentView.refresh`, which installs a newer one)
   * every READ_EVERY_MS while registered: the watch may still be re-listing after a compaction (a
   * peer has reported a newer generation meanwhile), or have died without a word and left the
   * server deciding on an old view (chaos etcd-compaction: a server stuck 2 generations behind
   * for 10 s; in another run two servers 8 behind). A reported generation newer than etcd's is
   * one etcd never had (a confused or forged peer) and is forgotten, so one bad answer cannot
   * stop this server for good. Forgetting on a timer instead let a server decide on its old view
   * while its watch caught up (1.82x).
   */
  private confirmWithEtcd(): void {
    if (this.confirming) return;
    const now = this.deps.clock.elapsed();
    if (now - this.confirmedAt < READ_EVERY_MS) return;
    this.confirmedAt = now;
    this.confirming = true;
    const asked = this.newestSeen;
    void this.view
      .refresh(2000)
      .then(
        (stored) => {
          const inEtcd = stored?.assignment.generation ?? 0;
          if (inEtcd < asked && this.newestSeen === asked) {
            this.deps.log.warn(
              { newestSeen: asked, inEtcd, generation: this.ownership.generation() },
              "a generation reported by a peer is not in etcd: forgotten",
            );
            this.newestSeen = Math.max(inEtcd, this.ownership.generation());
          }
        },
        (err: Error) => this.deps.log.debug({ err: err.message }, "cannot read the assignment"),
      )
      .finally(() => {
        this.confirming = false;
      });
  }

  private setSuspended(on: boolean, why: string): void {
    if (this.ownership.isSuspended() === on) return;
    this.ownership.suspend(on);
    const fields = { generation: this.ownership.generation(), newestSeen: this.newestSeen, why };
    if (on) this.deps.log.warn(fields, "not deciding: this server may no longer own its slices");
    else this.deps.log.info(fields, "deciding again");
  }

  private peerGeneration(address: string): Promise<number> {
    if (this.deps.peerGeneration) return this.deps.peerGeneration(address);
    // Real gRPC deadlines are wall-clock times: the system clock, as for the peer pool.
    return this.viewClients
      .get(address)
      .getClusterView({ knownGeneration: 0 }, { deadlineMs: GUARD_INTERVAL_MS })
      .then((v) => v.generation);
  }

  /** Publishes this server's per-slice load every `ms`, bound to its lease. */
  private publishLoadEvery(ms: number): void {
    if (!(ms > 0)) return;
    this.ownership.takeLoad();
    const { clock, log } = this.deps;
    this.loadTimer = every(clock, ms, () => {
      const l = this.ownership.takeLoad();
      const pools = this.deps.pools?.() ?? [];
      const global = this.deps.global?.();
      const record = {
        id: this.opts.id,
        generation: l.generation,
        at: clock.now(),
        ranges: l.ranges,
        ...(pools.length > 0 ? { pools } : {}),
        ...(global !== undefined ? { global } : {}),
      };
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
    const until = clock.elapsed() + timeoutMs;
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
    while (!this.holdsNothing() && clock.elapsed() < until)
      await this.ownership.changed(until - clock.elapsed());
    await Promise.race([
      this.handoff.idle(),
      // Ref'd, as before: the drain's deadline stands even once nothing else is pending.
      sleep(clock, Math.max(0, until - clock.elapsed()), { ref: true }),
    ]);
    const drained = this.holdsNothing();
    if (drained) {
      // Its counters went with its ranges: the buddy's copies of them are of no use now.
      this.replicator?.stop();
      await this.replicator?.drained();
    }
    return drained;
  }

  /** Leaves: gives up leadership, revokes the registration, closes connections. */
  async stop(): Promise<void> {
    this.replicator?.stop();
    this.loadTimer?.cancel();
    this.guardTimer?.cancel();
    for (const t of this.reclaimTimers) t.cancel();
    await this.stack?.stop();
    await this.view.stop();
    await this.membership?.stop();
    this.peers.close();
    this.viewClients.close();
    this.client.close();
  }
}
