import { isScalar } from "yaml";
import { formatDuration, parseDuration } from "./duration.js";
import { type DocReader, describe, type Field, sourceText } from "./yaml-read.js";

/**
 * Scalar readers. Each reports its own problem (naming the field's path and line) and returns
 * `undefined`, so callers keep going and one load reports every mistake in the file.
 */

/** Envoy's `requests_per_unit` is a uint32; nothing we count may exceed it either. */
export const MAX_UINT32 = 4_294_967_295;

/** Keys and values: Envoy reads any scalar as its text, so `value: 500` is the string "500". */
export function readText(r: DocReader, f: Field): string | undefined {
  if (!isScalar(f.value) || f.value.value === null) {
    r.report(f.path, `must be text, got ${describe(f.value)}`, f.value, f.keyNode);
    return undefined;
  }
  return sourceText(f.value);
}

/** Names and enum-like settings: must be written as text, not a number or a boolean. */
export function readString(r: DocReader, f: Field): string | undefined {
  if (!isScalar(f.value) || typeof f.value.value !== "string") {
    r.report(f.path, `must be text, got ${describe(f.value)}`, f.value, f.keyNode);
    return undefined;
  }
  return f.value.value;
}

export function readBool(r: DocReader, f: Field): boolean | undefined {
  if (!isScalar(f.value) || typeof f.value.value !== "boolean") {
    r.report(f.path, `must be true or false, got ${describe(f.value)}`, f.value, f.keyNode);
    return undefined;
  }
  return f.value.value;
}

export function readInt(r: DocReader, f: Field, min: number, max = MAX_UINT32): number | undefined {
  const node = f.value;
  if (!isScalar(node) || typeof node.value !== "number") {
    r.report(f.path, `must be a whole number, got ${describe(node)}`, node, f.keyNode);
    return undefined;
  }
  const v = node.value;
  if (!Number.isInteger(v)) {
    r.report(f.path, `must be a whole number, got ${sourceText(node)}`, node);
    return undefined;
  }
  if (v < min) {
    r.report(f.path, `must be at least ${min}, got ${sourceText(node)}`, node);
    return undefined;
  }
  if (v > max) {
    const why = max === MAX_UINT32 ? " (Envoy's limits are 32-bit)" : "";
    r.report(f.path, `must be at most ${max}${why}, got ${sourceText(node)}`, node);
    return undefined;
  }
  return v;
}

export function readChoice<T extends string>(
  r: DocReader,
  f: Field,
  what: string,
  choices: readonly T[],
  caseInsensitive = false,
): T | undefined {
  const s = readString(r, f);
  if (s === undefined) return undefined;
  const key = caseInsensitive ? s.toLowerCase() : s;
  if ((choices as readonly string[]).includes(key)) return key as T;
  r.report(f.path, `${JSON.stringify(s)} is not ${what} (${choices.join(", ")})`, f.value);
  return undefined;
}

export function readDuration(r: DocReader, f: Field, minMs: number, maxMs: number): number | undefined {
  const s = isScalar(f.value) && typeof f.value.value === "string" ? f.value.value : undefined;
  const ms = s === undefined ? undefined : parseDuration(s);
  if (ms === undefined) {
    r.report(
      f.path,
      `${describe(f.value)} is not a duration (write it with a unit: 500ms, 10s, 2m, 1h, 1d)`,
      f.value,
      f.keyNode,
    );
    return undefined;
  }
  if (ms < minMs || ms > maxMs) {
    r.report(
      f.path,
      `${JSON.stringify(s)} is out of range (${formatDuration(minMs)} to ${formatDuration(maxMs)})`,
      f.value,
    );
    return undefined;
  }
  return ms;
}
