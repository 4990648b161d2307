import { ClusterOwnership } from "../cluster/cluster-ownership.js";
import type { LimitConfig } from "../config/types.js";
import type { ManualClock } from "../core/clock.js";
import { Engine } from "../core/engine.js";
import type { Assignment, Member } from "../keyspace/assignment.js";
import { keyPoint } from "../keyspace/hash.js";
import { initialAssignment, place } from "../keyspace/placement.js";
import { DEFAULT_INPUT_LIMITS } from "../protocol/input-limits.js";
import { EnvoyRateLimit } from "../server/envoy.js";
import type { GlobalShares } from "../server/global-shares.js";
import { Limiter } from "../server/limiter.js";
import { noopMetrics } from "../server/metrics.js";

/** One simulated server: the real Limiter, Engine and ClusterOwnership on the virtual clock. */
export interface SimServer {
  readonly member: Member;
  limiter: Limiter;
  /** ShouldRateLimit on the same engine (synchronous callers). */
  envoy: EnvoyRateLimit;
  ownership: ClusterOwnership;
  up: boolean;
}

/**
 * N servers sharing one assignment, as the assigner would write it. A crash loses the server's
 * counters at once; after `leaseMs` (the membership lease running out) the next generation places
 * its slices on the survivors, which start them empty, as real servers do after a SIGKILL.
 */
export class SimCluster {
  readonly servers: SimServer[];
  private assignment: Assignment;

  constructor(
    private readonly clock: ManualClock,
    private readonly config: LimitConfig,
    n: number,
    private readonly leaseMs = 3000,
    /** A server's link to a global tier (a regional cluster of the global-limit scenarios). */
    private readonly globalOf?: (member: Member) => GlobalShares,
  ) {
    const members = Array.from({ length: n }, (_, i) => ({ id: `s${i}`, address: `sim-${i}:7000` }));
    this.assignment = initialAssignment(1, members);
    this.servers = members.map((m) => this.boot(m));
  }

  private boot(member: Member): SimServer {
    const ownership = new ClusterOwnership({ selfId: member.id, clock: this.clock, handoffTimeoutMs: 3000 });
    ownership.update(this.assignment);
    const engine = new Engine();
    const deps = { engine, clock: this.clock, ownership, limits: DEFAULT_INPUT_LIMITS, metrics: noopMetrics };
    const global = this.globalOf?.(member);
    const limiter = new Limiter({ ...deps, config: this.config, global });
    const config = this.config;
    const envoy = new EnvoyRateLimit(
      { ...deps, global, pools: limiter.pools },
      (domain, entries) => config.resolve(domain, entries),
      (domain) => config.domains.includes(domain),
    );
    return { member, limiter, envoy, ownership, up: true };
  }

  byAddress(address: string): SimServer | undefined {
    return this.servers.find((s) => s.member.address === address);
  }

  /** The server owning a shard key in the current assignment. */
  ownerOf(shardKey: string): SimServer {
    const m = this.assignment.ownerOf(keyPoint(shardKey));
    return this.servers.find((s) => s.member.id === m.id)!;
  }

  get generation(): number {
    return this.assignment.generation;
  }

  /** SIGKILL: the process and its counters are gone; its lease expires `leaseMs` later. */
  crash(s: SimServer): void {
    s.up = false;
    this.clock.after(this.leaseMs, () => {
      const alive = this.servers.filter((x) => x.up).map((x) => x.member);
      const next = place(this.assignment.generation + 1, alive, this.assignment.starts, this.assignment);
      this.assignment = next;
      for (const x of this.servers) if (x.up) x.ownership.update(next);
    });
  }
}
