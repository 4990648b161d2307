import { ShardlimitError } from "./errors.js";

/**
 * Applies each (client id, sequence number) once. A window of the last 32 sequence numbers per
 * client accepts reports that arrive out of order, and refuses to guess about anything older.
 */
export type SeqVerdict = "new" | "duplicate" | "too_old";

export const SEQ_WINDOW = 32;

/**
 * Client ids remembered at most (about 100 bytes each): a caller inventing a new id per report
 * would otherwise grow the table until the idle sweep (10 minutes) catches up.
 */
export const DEFAULT_MAX_REPORT_CLIENTS = 1_000_000;

/** A report from a client id not yet known, with the table full: refused, nothing applied. */
export class ClientsExhaustedError extends ShardlimitError {
  constructor(max: number) {
    super(
      "COUNTERS_EXHAUSTED",
      `the server tracks its maximum of ${max} reporting client ids (idle ones are forgotten after 10 minutes); try again later`,
    );
  }
}

class SeqWindow {
  max = 0;
  /** Bit i set: sequence number `max - i` was applied. */
  bits = 0;
  lastSeen = 0;
}

export class ReportDedup {
  private readonly clients = new Map<string, SeqWindow>();
  /** Where the sweep in progress left off (undefined: none under way). */
  private cursor: Iterator<[string, SeqWindow]> | undefined;

  constructor(private readonly maxClients = DEFAULT_MAX_REPORT_CLIENTS) {}

  get size(): number {
    return this.clients.size;
  }

  /** Pure look-up: what `accept` would say, without recording anything. */
  verdict(clientId: string, seq: number): SeqVerdict {
    const w = this.clients.get(clientId);
    if (!w || seq > w.max) return "new";
    const offset = w.max - seq;
    if (offset >= SEQ_WINDOW) return "too_old";
    return w.bits & (1 << offset) ? "duplicate" : "new";
  }

  /** Records `seq` as applied if it is new; a new client id past `maxClients` is refused. */
  accept(clientId: string, seq: number, now: number): SeqVerdict {
    let w = this.clients.get(clientId);
    if (!w) {
      if (this.clients.size >= this.maxClients) throw new ClientsExhaustedError(this.maxClients);
      w = new SeqWindow();
      this.clients.set(clientId, w);
    }
    w.lastSeen = now;
    if (seq > w.max) {
      const shift = seq - w.max;
      w.bits = shift >= SEQ_WINDOW ? 1 : ((w.bits << shift) | 1) >>> 0;
      w.max = seq;
      return "new";
    }
    const offset = w.max - seq;
    if (offset >= SEQ_WINDOW) return "too_old";
    const mask = (1 << offset) >>> 0;
    if (w.bits & mask) return "duplicate";
    w.bits = (w.bits | mask) >>> 0;
    return "new";
  }

  /** Un-records `seq` (nothing of it was applied): a copy sent again is new. */
  forget(clientId: string, seq: number): void {
    const w = this.clients.get(clientId);
    const offset = w === undefined ? SEQ_WINDOW : w.max - seq;
    if (offset >= 0 && offset < SEQ_WINDOW) w!.bits = (w!.bits & ~(1 << offset)) >>> 0;
  }

  /** Whether a sweep pass is under way (started by `sweepSlice`, not yet at the end). */
  get sweeping(): boolean {
    return this.cursor !== undefined;
  }

  /** Forgets clients idle since before `cutoff`: a later report from them starts afresh. */
  sweep(cutoff: number): number {
    let removed = 0;
    for (;;) {
      const r = this.sweepSlice(cutoff, Number.POSITIVE_INFINITY);
      removed += r.removed;
      if (r.done) return removed;
    }
  }

  /**
   * One slice of a sweep: visits at most `budget` clients from where the last slice stopped, so
   * a large table is swept over many turns of the event loop. `done` when the pass reached the end
   * (the next slice starts a new pass).
   */
  sweepSlice(cutoff: number, budget: number): { removed: number; visited: number; done: boolean } {
    this.cursor ??= this.clients.entries();
    let removed = 0;
    let visited = 0;
    while (visited < budget) {
      const next = this.cursor.next();
      if (next.done) {
        this.cursor = undefined;
        return { removed, visited, done: true };
      }
      visited++;
      const [id, w] = next.value;
      if (w.lastSeen < cutoff) {
        this.clients.delete(id);
        removed++;
      }
    }
    return { removed, visited, done: false };
  }
}
