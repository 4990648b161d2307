import type { Member } from "./assignment.js";

/**
 * The member that keeps standby copies of `id`'s counters: the next member after it by id,
 * wrapping around. Every server computes the same answer from the same member list, whatever
 * order the assignment lists them in, so a sender and its buddy agree without talking, and a
 * survivor can tell from an old assignment who held a dead member's copies. Undefined when `id`
 * is not a member or is the only one.
 */
export function buddyOf(members: readonly Member[], id: string): Member | undefined {
  if (!members.some((m) => m.id === id)) return undefined;
  let next: Member | undefined;
  let first: Member | undefined;
  for (const m of members) {
    if (m.id === id) continue;
    if (first === undefined || m.id < first.id) first = m;
    if (m.id > id && (next === undefined || m.id < next.id)) next = m;
  }
  return next ?? first;
}
