import type { ClusterView } from "./messages.js";

export type OwnershipVerdict = "own" | "not_owner" | "not_ready";

/**
 * Who serves which keys. Standalone, this server owns everything; the cluster implementation
 * answers from the assignment of its current generation. The request path only asks this.
 */
export interface Ownership {
  /** The assignment generation this server serves in (0 standalone). */
  generation(): number;
  check(shardKey: string): OwnershipVerdict;
  view(): ClusterView;
}

export class StandaloneOwnership implements Ownership {
  /** `selfAddress` may be a function: the port is known only once the server is bound. */
  constructor(private readonly selfAddress: string | (() => string)) {}
  generation(): number {
    return 0;
  }
  check(): OwnershipVerdict {
    return "own";
  }
  view(): ClusterView {
    return {
      generation: 0,
      members: [
        {
          id: "standalone",
          address: typeof this.selfAddress === "function" ? this.selfAddress() : this.selfAddress,
        },
      ],
      slices: [{ start: "0", owner: 0 }],
      standalone: true,
    };
  }
}
