import type { Clock } from "../core/clock.js";
import { agedSnapshot, type CounterSnapshot } from "../core/transfer.js";
import type { PointRange } from "../protocol/messages.js";

/** A copy as received, with when (`Clock.elapsed`: it ages by monotonic time, not the wall clock). */
interface Copy {
  s: CounterSnapshot;
  at: number;
}

/** What `put` did: copies stored, or why none was. */
export type PutResult = { stored: number } | { refused: string };

/**
 * The standby copies this server keeps for the members whose buddy it is: per member, the latest
 * copy of each counter it sent. A copy is worth keeping until its counter would have expired at
 * the sender (its window over, its leases and gateways gone): past that it is dropped, lazily, a
 * bounded number of copies visited per `put`. Bounded in copies in all: a `put` that would pass
 * the bound stores nothing and says so.
 */
export class StandbyStore {
  private readonly bySource = new Map<string, Map<string, Copy>>();
  private total = 0;
  /** Where the lazy expiry left off: a source and its copies not yet visited. */
  private cursor: { source: string; copies: Iterator<[string, Copy]> } | undefined;
  private sourceCursor: Iterator<string> | undefined;

  constructor(
    private readonly clock: Clock,
    readonly maxCopies: number,
  ) {}

  /** Copies held, of every member. */
  get size(): number {
    return this.total;
  }

  /**
   * Stores `from`'s copies, each replacing the one it had of that counter. Refused whole when the
   * new ones would pass `maxCopies` even after expired copies are dropped.
   */
  put(from: string, copies: readonly CounterSnapshot[]): PutResult {
    const at = this.clock.elapsed();
    // Expiry keeps pace with what arrives: twice as many visited as stored, and a few more.
    this.expire(at, 2 * copies.length + 64);
    let held = this.bySource.get(from);
    let fresh = 0;
    for (const s of copies) if (!held?.has(s.key)) fresh++;
    if (this.total + fresh > this.maxCopies) {
      return {
        refused: `standby copies are at their bound of ${this.maxCopies} (${this.total} held, ${fresh} new in this call)`,
      };
    }
    if (held === undefined) {
      held = new Map();
      this.bySource.set(from, held);
    }
    for (const s of copies) held.set(s.key, { s, at });
    this.total += fresh;
    return { stored: copies.length };
  }

  /**
   * `of`'s copies of counters whose shard's point lies in `ranges`, aged by their time here so
   * they read as of now; expired ones are dropped on the way.
   */
  copies(of: string, ranges: readonly PointRange[], pointOf: (shard: string) => number): CounterSnapshot[] {
    const held = this.bySource.get(of);
    if (held === undefined) return [];
    const now = this.clock.elapsed();
    const out: CounterSnapshot[] = [];
    for (const [key, c] of held) {
      const age = now - c.at;
      if (age >= c.s.expiresInMs) {
        this.remove(of, held, key);
        continue;
      }
      const point = pointOf(c.s.shard || c.s.key);
      if (ranges.some((r) => point >= r.start && point < r.end)) out.push(agedSnapshot(c.s, age));
    }
    return out;
  }

  /** Forgets every copy of `of` (it handed its ranges over: they are of no use). */
  drop(of: string): number {
    const held = this.bySource.get(of);
    if (held === undefined) return 0;
    this.bySource.delete(of);
    this.total -= held.size;
    if (this.cursor?.source === of) this.cursor = undefined;
    return held.size;
  }

  private remove(of: string, held: Map<string, Copy>, key: string): void {
    held.delete(key);
    this.total--;
    if (held.size === 0) {
      this.bySource.delete(of);
      if (this.cursor?.source === of) this.cursor = undefined;
    }
  }

  /** Visits up to `budget` copies where the last visit left off, dropping the expired ones. */
  private expire(now: number, budget: number): void {
    for (let visited = 0; visited < budget && this.total > 0; ) {
      if (this.cursor === undefined) {
        this.sourceCursor ??= this.bySource.keys();
        const next = this.sourceCursor.next();
        if (next.done) {
          this.sourceCursor = undefined;
          continue;
        }
        const held = this.bySource.get(next.value);
        if (held !== undefined) this.cursor = { source: next.value, copies: held.entries() };
        continue;
      }
      const { source, copies } = this.cursor;
      const next = copies.next();
      if (next.done) {
        this.cursor = undefined;
        continue;
      }
      visited++;
      const [key, c] = next.value;
      if (now - c.at >= c.s.expiresInMs) this.remove(source, this.bySource.get(source)!, key);
    }
  }
}
