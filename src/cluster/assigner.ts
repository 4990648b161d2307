import { type Clock, every, type Timer } from "../core/clock.js";
import type { Assignment, Member } from "../keyspace/assignment.js";
import { encodeAssignment } from "../keyspace/assignment-codec.js";
import { initialAssignment, place } from "../keyspace/placement.js";
import { DEFAULT_REBALANCE, type RebalanceOptions, rebalance } from "../keyspace/rebalance.js";
import { type AssignmentView, assignmentKey } from "./assignment-view.js";
import type { Leadership } from "./leadership.js";
import type { Log } from "./log.js";

export interface AssignerOptions {
  prefix: string;
  /** The stored assignment, shared with the server; the assigner is kicked when it changes. */
  view: AssignmentView;
  leadership: Leadership;
  /** Stamps each assignment written (`writtenAt`, wall time in production) and times rebalancing. */
  clock: Clock;
  log: Log;
  /** Measured load per slice of `a` (undefined when nothing is measured): enables rebalancing. */
  loads?: (a: Assignment) => Float64Array | undefined;
  /** How often a load-balancing round runs while leading. */
  rebalanceIntervalMs?: number;
  rebalance?: RebalanceOptions;
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
  private balanceDue = false;
  private timer: Timer | undefined;
  /** Generations this assigner wrote (for tests and status). */
  written = 0;
  /** Load-balancing rounds that wrote an assignment. */
  rebalances = 0;

  constructor(private readonly opts: AssignerOptions) {
    if (opts.loads && (opts.rebalanceIntervalMs ?? 0) > 0) {
      this.timer = every(opts.clock, opts.rebalanceIntervalMs!, () => {
        if (!opts.leadership.leading()) return;
        this.balanceDue = true;
        this.kick();
      });
    }
  }

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
    const { leadership, log, clock } = this.opts;
    if (!leadership.leading() || this.members.length === 0) return;
    const prev = this.opts.view.current();
    const generation = (prev?.assignment.generation ?? 0) + 1;
    const next = prev
      ? place(generation, this.members, prev.assignment.starts, prev.assignment, clock.now())
      : initialAssignment(generation, this.members, clock.now());
    if (prev && sameOwners(prev.assignment, next)) {
      if (this.balanceDue) await this.balance(prev.text, prev.assignment, generation);
      return;
    }
    const text = encodeAssignment(next);
    const ok = await leadership.fencedPut(assignmentKey(this.opts.prefix), text, prev?.text ?? null);
    if (ok) {
      this.written++;
      log.info({ generation, members: next.members.length, slices: next.slices }, "assignment written");
    }
  }

  /** One load-balancing round: written only if the cluster is out of balance and it changes something. */
  private async balance(prevText: string, current: Assignment, generation: number): Promise<void> {
    this.balanceDue = false;
    const load = this.opts.loads?.(current);
    if (!load) return;
    const opts = this.opts.rebalance ?? DEFAULT_REBALANCE;
    const r = rebalance(current, load, generation, opts, this.opts.clock.now());
    // Merges alone are not worth a new generation; they ride along with the next real change.
    if (r.imbalanceBefore <= opts.targetImbalance || (r.moves === 0 && r.splits === 0)) return;
    const ok = await this.opts.leadership.fencedPut(
      assignmentKey(this.opts.prefix),
      encodeAssignment(r.assignment),
      prevText,
    );
    if (ok) {
      this.written++;
      this.rebalances++;
      this.opts.log.info(
        {
          generation,
          imbalanceBefore: Number(r.imbalanceBefore.toFixed(3)),
          imbalanceAfter: Number(r.imbalanceAfter.toFixed(3)),
          churn: Number(r.churn.toFixed(4)),
          moves: r.moves,
          splits: r.splits,
          merges: r.merges,
          slices: r.assignment.slices,
        },
        "rebalanced by load",
      );
    }
  }

  /** Waits for a write in progress; the view belongs to the caller. */
  async stop(): Promise<void> {
    this.timer?.cancel();
    await this.running;
  }
}
