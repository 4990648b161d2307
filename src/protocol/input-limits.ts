import { z } from "zod";

/**
 * Bounds on what one request may ask. Every violation is answered with an error naming the bound
 * and changes nothing; none of them can crash or stall the server.
 */
export const InputLimitsSchema = z.object({
  /** Entries in one report, items in one Check, descriptors in one ShouldRateLimit. */
  maxBatch: z.number().int().positive().default(10_000),
  /** Bytes of one counter key (UTF-16 code units, a close upper bound of bytes for ASCII keys). */
  maxKeyLength: z.number().int().positive().default(1024),
  /** Largest amount (cost, hits, admitted units) in one item. */
  maxAmount: z.number().positive().default(1e9),
  /** Largest gRPC message accepted, in bytes. */
  maxMessageBytes: z
    .number()
    .int()
    .positive()
    .default(16 * 1024 * 1024),
  /** Entries in one Envoy descriptor. */
  maxDescriptorEntries: z.number().int().positive().default(32),
  /** Length of a client or lease id. */
  maxIdLength: z.number().int().positive().default(256),
  /** A caller-chosen lease timeout (Acquire): a crashed caller holds its slot at most this long. */
  maxLeaseTimeoutMs: z.number().int().positive().default(3_600_000),
  /** Items in one Peer.Forward call, all parts together (check items and Envoy descriptors). */
  maxForwardItems: z.number().int().positive().default(100_000),
  /**
   * Counters in one Peer.Handoff chunk (and one Peer.Replicate call, or Peer.Standby page): a
   * backstop, as chunks are cut by encoded size below the message limit. Each counter's clients are bounded by the client-table bound (4096) and its
   * leases by `maxLeasesPerKey`.
   */
  maxHandoffCounters: z.number().int().positive().default(1_000_000),
  /** Leases on one concurrency key (the engine's bound); a handed-over counter may hold no more. */
  maxLeasesPerKey: z.number().int().positive().default(100_000),
  /**
   * A report's interval_ms: how often a gateway reports. The owner keeps a silent gateway's share
   * for ten intervals, so a caller's interval sets how long its state is kept.
   */
  minIntervalMs: z.number().int().positive().default(10),
  maxIntervalMs: z.number().int().positive().default(60_000),
  /** Open tickets (Check items with `ticket`) one server holds, settled ones kept until their timeout. */
  maxTickets: z.number().int().positive().default(1_000_000),
  /** A caller-chosen ticket timeout: an unsettled ticket is forgotten (its estimate charged) after it. */
  maxTicketTimeoutMs: z.number().int().positive().default(3_600_000),
  /** A Check item's max_wait_ms: how long a caller may hold a place in a counter's queue. */
  maxCheckWaitMs: z.number().int().positive().default(30_000),
  /** Check requests waiting on one counter, and on one server (each holds a call open). */
  maxCheckWaitersPerKey: z.number().int().positive().default(1_000),
  maxCheckWaiters: z.number().int().positive().default(10_000),
});

export type InputLimits = z.infer<typeof InputLimitsSchema>;

export const DEFAULT_INPUT_LIMITS: InputLimits = InputLimitsSchema.parse({});

/** Why an amount is unacceptable, or undefined if it is fine. */
export function amountProblem(name: string, v: number, limits: InputLimits): string | undefined {
  if (typeof v !== "number" || Number.isNaN(v)) return `${name} is not a number`;
  if (v < 0) return `${name} is negative (${v})`;
  if (!Number.isFinite(v) || v > limits.maxAmount)
    return `${name} ${v} exceeds the maximum of ${limits.maxAmount}`;
  return undefined;
}

/** A report entry's amounts, as the Limiter reads them. */
export interface EntryAmounts {
  admitted: number;
  rejected: number;
  held: number;
  windowAdmitted: number;
  refunded?: number;
}

/**
 * Why one of a report entry's five amounts is unacceptable, or undefined. One comparison chain for
 * the usual entry (every amount a number from 0 to the maximum; NaN fails every comparison), the
 * named reasons only for one that fails it: this runs once per entry of every report.
 */
export function entryAmountProblem(e: EntryAmounts, limits: InputLimits): string | undefined {
  const max = limits.maxAmount;
  const refunded = e.refunded ?? 0;
  if (
    typeof e.admitted === "number" &&
    typeof e.rejected === "number" &&
    typeof e.held === "number" &&
    typeof e.windowAdmitted === "number" &&
    typeof refunded === "number" &&
    e.admitted >= 0 &&
    e.admitted <= max &&
    e.rejected >= 0 &&
    e.rejected <= max &&
    e.held >= 0 &&
    e.held <= max &&
    e.windowAdmitted >= 0 &&
    e.windowAdmitted <= max &&
    refunded >= 0 &&
    refunded <= max
  )
    return undefined;
  return (
    amountProblem("admitted", e.admitted, limits) ??
    amountProblem("rejected", e.rejected, limits) ??
    amountProblem("held", e.held, limits) ??
    amountProblem("window_admitted", e.windowAdmitted, limits) ??
    amountProblem("refunded", refunded, limits)
  );
}

/** Why a key is unacceptable before it is even parsed, or undefined. */
export function keyProblem(key: string, limits: InputLimits): string | undefined {
  if (key.length === 0) return "key is empty";
  if (key.length > limits.maxKeyLength)
    return `key is ${key.length} long, over the maximum of ${limits.maxKeyLength}`;
  return undefined;
}
