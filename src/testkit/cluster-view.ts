import { keyPoint, pointFromWire } from "../keyspace/hash.js";
import type { ClusterView } from "../protocol/messages.js";

/** The id of the member that owns shard key `key` in `view` (what the servers route by). */
export function ownerIn(view: ClusterView, key: string): string {
  const point = keyPoint(key);
  let owner = -1;
  for (const s of view.slices) {
    if (pointFromWire(s.start)! <= point) owner = s.owner;
    else break;
  }
  return view.members[owner]!.id;
}
