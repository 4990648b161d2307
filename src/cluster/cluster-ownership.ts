import type { ClusterView } from "../server/messages.js";
import type { Ownership, OwnershipVerdict } from "../server/ownership.js";
import type { Assignment } from "./assignment.js";
import { keyPoint, pointToWire } from "./hash.js";

/**
 * Ownership from the current assignment: this server serves a key only if the key's slice is
 * assigned to it in the generation it holds. Until a first assignment arrives it owns nothing.
 */
export class ClusterOwnership implements Ownership {
  private assignment: Assignment | undefined;
  private selfIndex = -1;

  constructor(private readonly selfId: string) {}

  /** Installs a newer assignment; an older or equal generation is ignored (generations only grow). */
  update(a: Assignment): boolean {
    if (this.assignment && a.generation <= this.assignment.generation) return false;
    this.assignment = a;
    this.selfIndex = a.members.findIndex((m) => m.id === this.selfId);
    return true;
  }

  current(): Assignment | undefined {
    return this.assignment;
  }

  generation(): number {
    return this.assignment?.generation ?? 0;
  }

  check(shardKey: string): OwnershipVerdict {
    const a = this.assignment;
    if (!a || this.selfIndex < 0) return "not_owner";
    return a.owners[a.sliceOf(keyPoint(shardKey))] === this.selfIndex ? "own" : "not_owner";
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
