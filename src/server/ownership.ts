import { type Clock, sleep, systemClock } from "../core/clock.js";
import type { ClusterView } from "../protocol/messages.js";

export type OwnershipVerdict = "own" | "not_owner" | "not_ready";

/** The server that owns a key, as the current assignment names it. */
export interface Owner {
  readonly id: string;
  /** host:port of its gRPC endpoint. */
  readonly address: string;
  /** This server. */
  readonly self: boolean;
}

/**
 * Who serves which keys. Standalone, this server owns everything; the cluster implementation
 * answers from the assignment of its current generation. The request path only asks this.
 */
export interface Ownership {
  /** The assignment generation this server serves in (0 standalone). */
  generation(): number;
  /** `placed`: where the caller keeps the key's point, filled here when it is needed. */
  check(shardKey: string, placed?: Placed): OwnershipVerdict;
  /** The owner of `shardKey` (`placed` as for `check`); undefined while no assignment is known. */
  ownerOf(shardKey: string, placed?: Placed): Owner | undefined;
  /**
   * Resolves at the next change of assignment or readiness, or after `ms`, whichever is first:
   * what a caller that met `not_owner` or `not_ready` waits for before trying again.
   */
  changed(ms: number): Promise<void>;
  view(): ClusterView;
}

/**
 * A key's point in the key space (`keyPoint` of its shard key), kept by the caller across checks:
 * hashing a key costs more than the rest of a report entry's counting, and a cluster member checks
 * every entry. Undefined until an ownership that places keys by point fills it; a standalone
 * server never does.
 */
export interface Placed {
  point: number | undefined;
}

export class StandaloneOwnership implements Ownership {
  /**
   * `selfAddress` may be a function: the port is known only once the server is bound. Nothing
   * changes standalone, so `changed` just waits out `ms` on `clock`.
   */
  constructor(
    private readonly selfAddress: string | (() => string),
    private readonly clock: Clock = systemClock,
  ) {}
  generation(): number {
    return 0;
  }
  check(): OwnershipVerdict {
    return "own";
  }
  private address(): string {
    return typeof this.selfAddress === "function" ? this.selfAddress() : this.selfAddress;
  }
  ownerOf(): Owner {
    return { id: "standalone", address: this.address(), self: true };
  }
  changed(ms: number): Promise<void> {
    return sleep(this.clock, ms);
  }
  view(): ClusterView {
    return {
      generation: 0,
      members: [{ id: "standalone", address: this.address() }],
      slices: [{ start: "0", owner: 0 }],
      standalone: true,
    };
  }
}
