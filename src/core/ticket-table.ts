import type { Limit } from "./limit.js";

/**
 * Tickets of exact settlement: a Check that asked for one admitted estimates, and the caller
 * settles the actual costs later, once. The table keeps each ticket until it is settled and then
 * until its timeout (so a retried Settle gets the same answer), and forgets an unsettled one at
 * its timeout: the estimate stays charged. Pure: time comes in as `now` (a monotonic reading) and
 * ids from the `newId` it is given.
 */

/** One counter a ticket charged: a request item may charge two (a tenant and its group). */
export interface TicketCharge {
  readonly key: string;
  readonly shard: string;
  readonly limit: Limit;
  /** The units admitted on it: what a settlement may refund at most. */
  readonly estimate: number;
  /**
   * The counter's window start when it was charged (windowed algorithms): a refund is applied
   * only to that window's count, never to a later window's.
   */
  readonly windowAt: number;
  /** Which of the ticket's items (and so which `actual`) this charge belongs to. */
  readonly item: number;
}

/** What a settlement answered, given again to a retried Settle. */
export interface SettledAnswer {
  remaining: number;
  limit: number;
  resetMs: number;
}

export interface Ticket {
  readonly id: string;
  /** The key of the first item the ticket covers: a Settle naming a key must name this one. */
  readonly key: string;
  /** Items covered (one per `actual` a Settle must give). */
  readonly items: number;
  readonly charges: readonly TicketCharge[];
  /** When the table forgets it, on the monotonic clock (sooner once settled: `settled`). */
  expiresAt: number;
  /** Set once settled. */
  answer: SettledAnswer | undefined;
  /**
   * The identity that took it (the Check's caller, under an authorisation file): only it may
   * settle it. Absent: anyone holding the id may.
   */
  readonly taker?: string;
}

/** The table is full: a new ticket is refused (and so is the Check that asked for it). */
export class TicketsExhaustedError extends Error {}

/**
 * How long a settled ticket is kept to answer a repeated Settle the same: long enough for any
 * retry of the call, short enough that settled tickets do not crowd the table out.
 */
export const SETTLED_KEEP_MS = 60_000;
/** A full table is swept whole at most this often: a Check asking for a ticket then costs O(1). */
const FULL_SWEEP_EVERY_MS = 1000;

export class TicketTable {
  private readonly tickets = new Map<string, Ticket>();
  /** Insertion order is expiry order only per timeout; the sweep walks the map in slices. */
  private cursor: Iterator<Ticket> | undefined;
  private fullSweepAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly maxTickets: number,
    private readonly newId: () => string,
  ) {}

  get size(): number {
    return this.tickets.size;
  }

  /** Whether `n` more tickets fit now (after dropping expired ones if the table looks full). */
  hasRoom(now: number, n = 1): boolean {
    if (this.tickets.size + n <= this.maxTickets) return true;
    if (now - this.fullSweepAt < FULL_SWEEP_EVERY_MS) return false;
    this.fullSweepAt = now;
    this.cursor = undefined; // a whole pass, from the start
    this.sweep(now, Number.POSITIVE_INFINITY);
    return this.tickets.size + n <= this.maxTickets;
  }

  /** Opens a ticket; throws TicketsExhaustedError when the table is full. */
  open(
    key: string,
    items: number,
    charges: readonly TicketCharge[],
    timeoutMs: number,
    now: number,
    taker?: string,
  ): Ticket {
    if (!this.hasRoom(now)) {
      throw new TicketsExhaustedError(
        `the server holds its maximum of ${this.maxTickets} open tickets; settle some, or wait for their timeouts`,
      );
    }
    let id = this.newId();
    // A clash of 128 random bits does not happen; were the generator broken, never share a ticket.
    while (this.tickets.has(id)) id = this.newId();
    const t: Ticket = { id, key, items, charges, expiresAt: now + timeoutMs, answer: undefined };
    if (taker !== undefined) (t as { taker?: string }).taker = taker;
    this.tickets.set(id, t);
    return t;
  }

  /** Records the settlement's answer; the ticket is then kept at most `SETTLED_KEEP_MS` more. */
  settled(t: Ticket, answer: SettledAnswer, now: number): void {
    t.answer = answer;
    t.expiresAt = Math.min(t.expiresAt, now + SETTLED_KEEP_MS);
  }

  /** The ticket, unless unknown or past its timeout (then it is forgotten). */
  get(id: string, now: number): Ticket | undefined {
    const t = this.tickets.get(id);
    if (t === undefined) return undefined;
    if (t.expiresAt <= now) {
      this.tickets.delete(id);
      return undefined;
    }
    return t;
  }

  /**
   * Forgets tickets past their timeout, visiting at most `budget` of them from where the last
   * call stopped, so a large table is swept a slice at a time.
   */
  sweep(now: number, budget = 10_000): number {
    let removed = 0;
    this.cursor ??= this.tickets.values();
    for (let i = 0; i < budget; i++) {
      const next = this.cursor.next();
      if (next.done) {
        this.cursor = undefined;
        break;
      }
      if (next.value.expiresAt <= now) {
        this.tickets.delete(next.value.id);
        removed++;
      }
    }
    return removed;
  }
}
