import type { Etcd3 } from "etcd3";
import { type Clock, TIMED_OUT, within } from "../core/clock.js";
import type { Assignment } from "../keyspace/assignment.js";
import { decodeAssignment } from "../keyspace/assignment-codec.js";
import type { Log } from "./log.js";
import { PrefixView } from "./prefix-view.js";

export function assignmentKey(prefix: string): string {
  return `${prefix}assignment/current`;
}

/** The assignment as stored: its text (what fenced writes compare against) and its decoding. */
export interface StoredAssignment {
  readonly text: string;
  readonly assignment: Assignment;
}

export interface AssignmentViewOptions {
  client: Etcd3;
  prefix: string;
  /** Times the mirror's retries. */
  clock: Clock;
  log: Log;
  /** Called with each valid assignment seen (and undefined if the key is deleted). */
  onChange: (stored: StoredAssignment | undefined) => void;
}

/**
 * The current assignment as etcd holds it, mirrored by a watch (which re-lists after a
 * compaction and keeps the last one while etcd is away). Servers serve from it and the assigner
 * writes against it; one view per process serves both.
 */
export class AssignmentView {
  private readonly view: PrefixView;
  private stored: StoredAssignment | undefined;

  private readonly key: string;

  constructor(private readonly opts: AssignmentViewOptions) {
    const key = assignmentKey(opts.prefix);
    this.key = key;
    this.view = new PrefixView({
      client: opts.client,
      prefix: key,
      clock: opts.clock,
      log: opts.log,
      onChange: (entries) => {
        const text = entries.get("");
        if (text === undefined) {
          this.stored = undefined;
          opts.onChange(undefined);
          return;
        }
        if (text === this.stored?.text) return;
        const a = decodeAssignment(text);
        if (typeof a === "string") {
          opts.log.error({ problem: a }, "stored assignment is invalid; keeping the last valid one");
          return;
        }
        this.stored = { text, assignment: a };
        opts.onChange(this.stored);
      },
    });
  }

  current(): StoredAssignment | undefined {
    return this.stored;
  }

  /**
   * Reads the assignment from etcd directly (not through the watch) and, when it is newer than the
   * one held, takes it as the watch would have (`onChange`): a watch can fall behind or die without
   * a word after a partition, and the server then decides, and its assigner writes, against an old
   * view. Resolves to what etcd holds (undefined: none, or invalid); rejects after `timeoutMs`
   * (etcd calls hang behind a partition).
   */
  async refresh(timeoutMs: number): Promise<StoredAssignment | undefined> {
    const text = await within(this.opts.clock, timeoutMs, this.opts.client.get(this.key).string());
    if (text === TIMED_OUT) throw new Error(`reading the assignment took over ${timeoutMs} ms`);
    if (text === null) return undefined;
    const a = decodeAssignment(text);
    if (typeof a === "string") return undefined;
    const read = { text, assignment: a };
    const held = this.stored?.assignment.generation ?? 0;
    if (a.generation > held) {
      this.opts.log.warn(
        { held, inEtcd: a.generation },
        "the assignment watch is behind etcd: taking what a direct read found",
      );
      this.stored = read;
      this.opts.onChange(read);
    }
    return read;
  }

  start(): Promise<void> {
    return this.view.start();
  }

  stop(): Promise<void> {
    return this.view.stop();
  }
}
