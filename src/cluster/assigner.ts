import type { Assignment, Member } from "./assignment.js";
import { encodeAssignment } from "./assignment-codec.js";
import { type AssignmentView, assignmentKey } from "./assignment-view.js";
import type { Leadership } from "./leadership.js";
import type { Log } from "./log.js";
import { initialAssignment, place } from "./placement.js";

export interface AssignerOptions {
  prefix: string;
  /** The stored assignment, shared with the server; the assigner is kicked when it changes. */
  view: AssignmentView;
  leadership: Leadership;
  log: Log;
}

function sameOwners(a: Assignment, b: Assignment): boolean {
  if (a.members.length !== b.members.length || a.slices !== b.slices) return false;
  for (let i = 0; i < a.slices; i++) {
    if (a.starts[i] !== b.starts[i] || a.members[a.owners[i]!]!.id !== b.members[b.owners[i]!]!.id)
      return false;
  }
  return a.members.every(
    (m, i) =>
      m.id === b.members[i]!.id &&
      m.address === b.members[i]!.address &&
      Boolean(m.draining) === Boolean(b.members[i]!.draining),
  );
}

/**
 * Writes the assignment when membership changes, while (and only while) this server leads:
 * the slices of the current assignment are placed again on the current members (consistent
 * hashing, so a join or leave moves about 1/N of them), under the next generation. Each write is
 * fenced by leadership and by the assignment it replaces, so generations only grow and a leader
 * acting on a stale view cannot overwrite a newer assignment.
 */
export class Assigner {
  private members: Member[] = [];
  private running: Promise<void> | undefined;
  private again = false;
  /** Generations this assigner wrote (for tests and status). */
  written = 0;

  constructor(private readonly opts: AssignerOptions) {}

  /** The latest assignment seen in etcd. */
  current(): Assignment | undefined {
    return this.opts.view.current()?.assignment;
  }

  setMembers(members: readonly Member[]): void {
    this.members = members.map((m) =>
      m.draining ? { id: m.id, address: m.address, draining: true } : { id: m.id, address: m.address },
    );
    this.kick();
  }

  /** Re-evaluates now (e.g. after becoming leader). Serialised: one write at a time. */
  kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.reconcile()
      .catch((err: Error) =>
        this.opts.log.warn({ err: err.message }, "assignment write failed; will retry on the next change"),
      )
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async reconcile(): Promise<void> {
    const { leadership, log } = this.opts;
    if (!leadership.leading() || this.members.length === 0) return;
    const prev = this.opts.view.current();
    const generation = (prev?.assignment.generation ?? 0) + 1;
    const next = prev
      ? place(generation, this.members, prev.assignment.starts, prev.assignment, Date.now())
      : initialAssignment(generation, this.members, Date.now());
    if (prev && sameOwners(prev.assignment, next)) return;
    const text = encodeAssignment(next);
    const ok = await leadership.fencedPut(assignmentKey(this.opts.prefix), text, prev?.text ?? null);
    if (ok) {
      this.written++;
      log.info({ generation, members: next.members.length, slices: next.slices }, "assignment written");
    }
  }

  /** Waits for a write in progress; the view belongs to the caller. */
  async stop(): Promise<void> {
    await this.running;
  }
}
