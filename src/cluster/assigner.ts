import type { Etcd3 } from "etcd3";
import type { Assignment, Member } from "./assignment.js";
import { decodeAssignment, encodeAssignment } from "./assignment-codec.js";
import type { Leadership } from "./leadership.js";
import type { Log } from "./log.js";
import { initialAssignment, place } from "./placement.js";
import { PrefixView } from "./prefix-view.js";

export function assignmentKey(prefix: string): string {
  return `${prefix}assignment/current`;
}

export interface AssignerOptions {
  client: Etcd3;
  prefix: string;
  leadership: Leadership;
  log: Log;
}

function sameOwners(a: Assignment, members: readonly Member[], b: Assignment): boolean {
  if (a.members.length !== members.length || a.slices !== b.slices) return false;
  for (let i = 0; i < a.slices; i++) {
    if (a.starts[i] !== b.starts[i] || a.members[a.owners[i]!]!.id !== b.members[b.owners[i]!]!.id)
      return false;
  }
  return a.members.every((m, i) => m.id === members[i]!.id && m.address === members[i]!.address);
}

/**
 * Writes the assignment when membership changes, while (and only while) this server leads:
 * the slices of the current assignment are placed again on the current members (consistent
 * hashing, so a join or leave moves about 1/N of them), under the next generation. Each write is
 * fenced by leadership and by the assignment it replaces, so generations only grow and a leader
 * acting on a stale view cannot overwrite a newer assignment.
 */
export class Assigner {
  private readonly view: PrefixView;
  private stored: { text: string; assignment: Assignment } | undefined;
  private members: Member[] = [];
  private running: Promise<void> | undefined;
  private again = false;
  /** Generations this assigner wrote (for tests and status). */
  written = 0;

  constructor(private readonly opts: AssignerOptions) {
    const key = assignmentKey(opts.prefix);
    this.view = new PrefixView({
      client: opts.client,
      prefix: key,
      log: opts.log,
      onChange: (entries) => {
        const text = entries.get("");
        if (text === undefined) {
          this.stored = undefined;
          return;
        }
        const a = decodeAssignment(text);
        if (typeof a === "string") opts.log.error({ problem: a }, "stored assignment is invalid");
        else this.stored = { text, assignment: a };
        this.kick();
      },
    });
  }

  async start(): Promise<void> {
    await this.view.start();
  }

  /** The latest assignment seen in etcd. */
  current(): Assignment | undefined {
    return this.stored?.assignment;
  }

  setMembers(members: readonly Member[]): void {
    this.members = members.map((m) => ({ id: m.id, address: m.address }));
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
    const prev = this.stored;
    const generation = (prev?.assignment.generation ?? 0) + 1;
    const next = prev
      ? place(generation, this.members, prev.assignment.starts)
      : initialAssignment(generation, this.members);
    if (prev && sameOwners(prev.assignment, next.members, next)) return;
    const text = encodeAssignment(next);
    const ok = await leadership.fencedPut(assignmentKey(this.opts.prefix), text, prev?.text ?? null);
    if (ok) {
      this.written++;
      log.info({ generation, members: next.members.length, slices: next.slices }, "assignment written");
    }
  }

  async stop(): Promise<void> {
    await this.view.stop();
    await this.running;
  }
}
