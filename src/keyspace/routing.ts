import type { ClusterView } from "../protocol/messages.js";
import { sliceIndex } from "./assignment.js";
import { pointFromWire } from "./hash.js";

/**
 * Where a gateway sends each key's reports: the owner of the key's slice in the newest
 * assignment a server told it about. Gateways need no etcd; any server hands out the view.
 */
export class Routing {
  private constructor(
    readonly generation: number,
    private readonly starts: Uint32Array,
    private readonly owners: readonly string[],
    /** Every member's address, for refreshing the view from any of them. */
    readonly addresses: readonly string[],
  ) {}

  /**
   * Builds the routing from a server's answer. A standalone server owns everything and may not
   * know the address it is reached at, so `from` (where the view came from) is used for it.
   */
  static fromView(view: ClusterView, from: string): Routing | string {
    if (view.standalone) return new Routing(0, Uint32Array.of(0), [from], [from]);
    if (view.slices.length === 0) return `server ${from} holds no assignment yet`;
    const starts = new Uint32Array(view.slices.length);
    const owners: string[] = [];
    for (let i = 0; i < view.slices.length; i++) {
      const s = view.slices[i]!;
      const start = pointFromWire(s.start);
      const member = view.members[s.owner];
      if (start === undefined || member === undefined) return `server ${from} sent a malformed slice #${i}`;
      if (i === 0 ? start !== 0 : start <= starts[i - 1]!) return `server ${from} sent unsorted slices`;
      starts[i] = start;
      owners.push(member.address);
    }
    return new Routing(
      view.generation,
      starts,
      owners,
      view.members.map((m) => m.address),
    );
  }

  ownerOf(point: number): string {
    return this.owners[sliceIndex(this.starts, point)]!;
  }
}
