import { randomBytes } from "node:crypto";
import type { Clock } from "../core/clock.js";
import { CapacityError, type CheckItem, type Decision } from "../core/decision.js";
import type { Engine } from "../core/engine.js";
import { InvalidArgumentError } from "../core/errors.js";
import { type TicketCharge, TicketTable } from "../core/ticket-table.js";
import { amountProblem, type InputLimits } from "../protocol/input-limits.js";
import { ErrorCode, type ItemError, itemError } from "../protocol/item-errors.js";
import type { CheckRequest, CheckResult, SettleRequest, SettleResponse } from "../protocol/messages.js";
import { ms } from "./key-policy.js";
import type { Ownership } from "./ownership.js";

/** An unsettled ticket is forgotten after this long unless the check asks otherwise. */
export const DEFAULT_TICKET_TIMEOUT_MS = 600_000;
/** Ticket ids are 22 characters (128 random bits, base64url); longer ones are refused unread. */
export const MAX_TICKET_ID_LENGTH = 64;
/** Expired tickets dropped per ticket opened: the table is swept as fast as it fills. */
const SWEEP_PER_OPEN = 8;

/** 128 random bits: a ticket cannot be guessed, only learned from the Check that made it. */
function randomTicketId(): string {
  return randomBytes(16).toString("base64url");
}

export interface TicketDeskDeps {
  engine: Engine;
  clock: Clock;
  ownership: Ownership;
  limits: InputLimits;
  /** Ids for new tickets (tests make them predictable). */
  newId?: () => string;
}

/** What a check decided, for `issue`: per resolved item, its engine items and its position. */
export interface CheckOutcome {
  readonly items: readonly CheckItem[];
  readonly positions: readonly number[];
  readonly starts: readonly number[];
  readonly counts: readonly number[];
}

/**
 * Exact settlement on the owner: `Check` items that ask for a ticket are admitted at their
 * estimate and get a ticket; `Settle` names it with the actual costs, and each counter the ticket
 * charged is corrected by actual - estimate, once. The tickets live in this server's memory, in
 * a table bounded by `maxTickets`; an unsettled one is forgotten at its timeout, its estimate
 * charged. A ticket is not handed over with its slice: the new owner answers UNKNOWN_TICKET, and
 * the estimate stays charged (as on a timeout).
 */
export class TicketDesk {
  readonly table: TicketTable;
  private readonly engine: Engine;
  private readonly clock: Clock;
  private readonly ownership: Ownership;
  private readonly limits: InputLimits;

  constructor(deps: TicketDeskDeps) {
    this.engine = deps.engine;
    this.clock = deps.clock;
    this.ownership = deps.ownership;
    this.limits = deps.limits;
    this.table = new TicketTable(deps.limits.maxTickets, deps.newId ?? randomTicketId);
  }

  /**
   * Checks a Check's ticket options before anything is charged: a bad timeout fails the call,
   * and a full table is the error of every item that asks for a ticket (undefined: room enough).
   */
  admit(req: CheckRequest): ItemError | undefined {
    const timeout = req.ticketTimeoutMs ?? 0;
    if (!Number.isSafeInteger(timeout) || timeout < 0 || timeout > this.limits.maxTicketTimeoutMs) {
      throw new InvalidArgumentError(
        `ticket_timeout_ms ${timeout} is not within 0..${this.limits.maxTicketTimeoutMs} (maxTicketTimeoutMs)`,
      );
    }
    let asked = 0;
    for (const it of req.items) if (it.ticket === true) asked++;
    if (asked === 0) return undefined;
    const needed = req.atomic ? 1 : asked;
    if (this.table.hasRoom(this.clock.elapsed(), needed)) return undefined;
    return itemError(
      ErrorCode.COUNTERS_EXHAUSTED,
      `the server holds its maximum of ${this.table.maxTickets} open tickets (maxTickets); settle some, or wait for their timeouts`,
    );
  }

  /**
   * Opens the tickets of a decided check and names them in `results`: one per admitted item that
   * asked, or in an atomic check one for all the items that asked (their actual costs are settled
   * together, in the order of the items).
   */
  issue(req: CheckRequest, results: CheckResult[], o: CheckOutcome): void {
    // Most checks ask for no ticket: nothing below is made for them.
    let asking: number[] | undefined;
    for (let i = 0; i < req.items.length; i++) {
      if (req.items[i]!.ticket !== true || results[i]!.allowed !== true) continue;
      asking ??= [];
      asking.push(i);
    }
    if (asking === undefined) return;
    const timeout = req.ticketTimeoutMs || DEFAULT_TICKET_TIMEOUT_MS;
    const now = this.clock.elapsed();
    /** Resolved item j by position, for the charges of the item at that position. */
    const byPosition = new Map<number, number>();
    for (let j = 0; j < o.positions.length; j++) byPosition.set(o.positions[j]!, j);
    const chargesOf = (pos: number, item: number, into: TicketCharge[]) => {
      const j = byPosition.get(pos);
      if (j === undefined) return; // no limit applies: nothing was charged
      for (let k = o.starts[j]!; k < o.starts[j]! + o.counts[j]!; k++) {
        const it = o.items[k]!;
        if (it.limit.unlimited) continue;
        const key = it.key;
        const shard = it.shard ?? key;
        into.push({
          key,
          shard,
          limit: it.limit,
          estimate: it.cost,
          windowAt: this.engine.windowOf(key, it.limit),
          item,
        });
      }
    };
    this.table.sweep(now, SWEEP_PER_OPEN);
    if (req.atomic) {
      const charges: TicketCharge[] = [];
      for (let n = 0; n < asking.length; n++) chargesOf(asking[n]!, n, charges);
      const t = this.table.open(req.items[asking[0]!]!.key, asking.length, charges, timeout, now, req.caller);
      for (const pos of asking) results[pos]!.ticketId = t.id;
      return;
    }
    for (const pos of asking) {
      const charges: TicketCharge[] = [];
      chargesOf(pos, 0, charges);
      results[pos]!.ticketId = this.table.open(req.items[pos]!.key, 1, charges, timeout, now, req.caller).id;
    }
  }

  /** Settles by ticket: the actual costs, once; a second time answers the first answer. */
  settle(req: SettleRequest): SettleResponse {
    const id = req.ticketId ?? "";
    if (id.length > MAX_TICKET_ID_LENGTH) {
      throw new InvalidArgumentError(
        `ticket_id is ${id.length} long, over the maximum of ${MAX_TICKET_ID_LENGTH}`,
      );
    }
    const generation = this.ownership.generation();
    const fail = (code: ErrorCode, message: string): SettleResponse => ({
      error: itemError(code, message),
      generation,
    });
    const actual = req.actual ?? [];
    if (actual.length === 0)
      return fail(ErrorCode.INVALID_AMOUNT, "actual is missing: one cost per item the ticket covers");
    for (let i = 0; i < actual.length; i++) {
      const bad = amountProblem(`actual[${i}]`, actual[i]!, this.limits);
      if (bad !== undefined) return fail(ErrorCode.INVALID_AMOUNT, bad);
    }
    const now = this.clock.elapsed();
    const t = this.table.get(id, now);
    // A key that is not the ticket's is answered as an unknown ticket: a caller learns nothing of
    // tickets it was not given.
    if (t === undefined || (req.key !== "" && req.key !== t.key)) {
      return fail(
        ErrorCode.UNKNOWN_TICKET,
        `ticket ${JSON.stringify(id.slice(0, MAX_TICKET_ID_LENGTH))} is not held here${req.key === "" ? "" : ` for ${JSON.stringify(req.key.slice(0, 100))}`}: never issued, past its timeout (its estimate stays charged), or lost with its server`,
      );
    }
    if (t.taker !== undefined && req.caller !== t.taker) {
      return fail(
        ErrorCode.PERMISSION_DENIED,
        `ticket ${JSON.stringify(id.slice(0, MAX_TICKET_ID_LENGTH))} was taken by another identity; only its taker may settle it (caller ${JSON.stringify(req.caller ?? "")})`,
      );
    }
    if (actual.length !== t.items) {
      return fail(
        ErrorCode.INVALID_AMOUNT,
        `actual has ${actual.length} costs; the ticket covers ${t.items} item(s), one cost each in the check's order`,
      );
    }
    if (t.answer !== undefined) return { ...t.answer, generation, alreadySettled: true };
    if (req.generation > generation) {
      return fail(
        ErrorCode.NOT_OWNER,
        `this server has not confirmed generation ${req.generation} yet (it serves generation ${generation})`,
      );
    }
    for (const c of t.charges) {
      const v = this.ownership.check(c.shard);
      if (v !== "own") {
        return fail(
          v === "not_owner" ? ErrorCode.NOT_OWNER : ErrorCode.SLICE_NOT_READY,
          `the ticket's counter ${JSON.stringify(c.key.slice(0, 100))} is no longer this server's (generation ${generation})`,
        );
      }
    }
    const wall = this.clock.now();
    let tightest: { d: Decision; limit: number } | undefined;
    for (const c of t.charges) {
      let d: Decision;
      try {
        d = this.engine.settleCharge(c.key, c.limit, actual[c.item]! - c.estimate, c.windowAt, wall, c.shard);
      } catch (err) {
        // Only an extra charge on a counter swept since (its window over) makes a counter, and
        // past the bound there is none to make: that window's count is gone anyway.
        if (!(err instanceof CapacityError)) throw err;
        continue;
      }
      if (tightest === undefined || d.remaining < tightest.d.remaining)
        tightest = { d, limit: c.limit.limit };
    }
    const answer =
      tightest === undefined
        ? { remaining: 0, limit: 0, resetMs: 0 }
        : {
            remaining: Number.isFinite(tightest.d.remaining) ? tightest.d.remaining : 0,
            limit: tightest.limit,
            resetMs: ms(tightest.d.resetAt - wall),
          };
    this.table.settled(t, answer, now);
    return { ...answer, generation };
  }
}
