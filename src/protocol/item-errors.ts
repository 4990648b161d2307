import { ERRORS, type ErrorName, NotOwnerError, ShardlimitError, UnavailableError } from "../core/errors.js";

/**
 * Per-item errors inside batch answers: the one place that turns a code of the table
 * (core/errors.ts) into its wire number and back.
 */

type WireName = { [K in ErrorName]: (typeof ERRORS)[K] extends { wire: number } ? K : never }[ErrorName];

/** The per-item codes by name, as numbers on the wire. */
export const ErrorCode = Object.fromEntries(
  Object.entries(ERRORS).flatMap(([name, spec]) => ("wire" in spec ? [[name, spec.wire]] : [])),
) as { readonly [K in WireName]: (typeof ERRORS)[K]["wire"] };
export type ErrorCode = (typeof ErrorCode)[WireName];

export interface ItemError {
  code: ErrorCode;
  message: string;
}

const NAMES = new Map<number, WireName>(Object.entries(ErrorCode).map(([k, v]) => [v, k as WireName]));

/** An item error with `code`. */
export function itemError(code: ErrorCode, message: string): ItemError {
  return { code, message };
}

/** The table's name of a wire code (unknown numbers from a newer peer: `CODE_<n>`). */
export function errorName(code: number): string {
  return NAMES.get(code) ?? `CODE_${code}`;
}

/** A gateway keeps the counts of an item answered with `code` and sends them again. */
export function clientRetries(code: number): boolean {
  const name = NAMES.get(code);
  return name !== undefined && ERRORS[name].clientRetries;
}

/** A server that forwarded an item answered with `code` tries the owner again. */
export function serverRetries(code: number): boolean {
  const name = NAMES.get(code);
  return name !== undefined && ERRORS[name].serverRetries;
}

/**
 * The typed error for an item error, so a caller can tell NOT_OWNER from INVALID_KEY; a code this
 * version does not know is OWNER_UNAVAILABLE's kind of failure (try again), named as received.
 */
export function errorFromItem(e: ItemError, generation = 0): ShardlimitError {
  const name = NAMES.get(e.code);
  if (name === "NOT_OWNER") return new NotOwnerError(e.message, generation);
  if (name === undefined) return new UnavailableError(`${errorName(e.code)}: ${e.message}`);
  return new ShardlimitError(name, e.message);
}
