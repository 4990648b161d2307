import { isMap, isScalar, type Node } from "yaml";
import type { FairShareSpec } from "../core/limit.js";
import type { Priority, Reserve } from "../core/priority.js";
import type { Algorithm } from "./types.js";
import { readBool, readText } from "./values.js";
import {
  type DocReader,
  describe,
  type Field,
  type FieldRef,
  type NameRef,
  sourceText,
} from "./yaml-read.js";

/**
 * Reads the fields of a `rate_limit` block that say how a limit is shared: `fair_share` (divided
 * among the values of a child key, by weight), `reserve` (fractions kept for higher priority
 * classes) and `soft` (a child limit that may borrow the fair-share limit's idle capacity).
 * What needs the descriptor tree (does `by` name a child key, is there a fair-share limit above a
 * soft one) is checked in parse-file.ts, which is why the positions are handed back too.
 */

export const SHARING_FIELDS = ["fair_share", "reserve", "soft"] as const;

const FAIR_SHARE_FIELDS = ["by", "weights"];
const MAX_WEIGHT = 1000;
/** Weights are held in memory by every server and gateway: a list of every tenant is not one. */
const MAX_WEIGHTS = 10_000;
/** `low` has no class below it, so a reserve for it would keep nothing from anyone. */
const RESERVE_CLASSES: readonly Priority[] = ["critical", "high", "normal"];

export interface SharingSettings {
  readonly fairShare?: FairShareSpec;
  readonly reserve?: Reserve;
  readonly soft: boolean;
}

/** Positions for the checks against the tree, kept even when the values were invalid. */
export interface SharingRefs {
  /** `fair_share` was written, and its `by` when it could be read. */
  readonly fairShareAt?: FieldRef & { readonly by?: NameRef };
  /** Where `soft: true` was written. */
  readonly softAt?: FieldRef;
}

/** `kind`: the rule's algorithm, or `unlimited`; both refuse fields that cannot apply to them. */
export function readSharing(
  r: DocReader,
  fields: ReadonlyMap<string, Field>,
  kind: Algorithm | "unlimited",
): { settings: SharingSettings; refs: SharingRefs } {
  const fairField = fields.get("fair_share");
  const reserveField = fields.get("reserve");
  const softField = fields.get("soft");
  const fair = fairField ? readFairShare(r, fairField) : undefined;
  const reserve = reserveField ? readReserve(r, reserveField) : undefined;
  const soft = softField ? (readBool(r, softField) ?? false) : false;

  if (kind === "unlimited") {
    refuse(r, fairField, "does not apply to an unlimited rule: it has no limit to divide; remove it");
    refuse(r, reserveField, "does not apply to an unlimited rule: it has no limit to keep a share of");
    if (soft) refuse(r, softField, "has no effect on an unlimited rule (unlimited: true); remove it");
  } else if (kind === "concurrency") {
    // The fair-share and reserve decisions divide units per window; slots held and released are
    // not a rate, and the engine's concurrency limit has no notion of shares.
    const why = "a concurrency limit counts slots held, not a rate over a window";
    refuse(r, fairField, `does not apply to algorithm concurrency: fair shares divide a rate, and ${why}`);
    refuse(
      r,
      reserveField,
      `does not apply to algorithm concurrency: reserves keep part of a rate, and ${why}`,
    );
    if (soft)
      refuse(r, softField, `does not apply to algorithm concurrency: soft borrows a rate, and ${why}`);
  }
  return {
    settings: { ...(fair?.spec ? { fairShare: fair.spec } : {}), ...(reserve ? { reserve } : {}), soft },
    refs: {
      ...(fairField ? { fairShareAt: { ...at(r, fairField), ...(fair?.by ? { by: fair.by } : {}) } } : {}),
      ...(soft && softField ? { softAt: at(r, softField) } : {}),
    },
  };
}

function refuse(r: DocReader, f: Field | undefined, message: string): void {
  if (f) r.report(f.path, message, f.keyNode);
}

function at(r: DocReader, f: Field): FieldRef {
  return { path: f.path, line: r.lineOf(f.keyNode) };
}

function readFairShare(r: DocReader, field: Field): { spec?: FairShareSpec; by?: NameRef } {
  const fields = r.map(field.value, field.path, "fair_share", FAIR_SHARE_FIELDS, {}, field.keyNode);
  if (!fields) return {};
  const byField = fields.get("by");
  const weightsField = fields.get("weights");
  const weights = weightsField ? readWeights(r, weightsField) : new Map<string, number>();
  if (!byField) {
    r.report(
      `${field.path}.by`,
      "is required: the key of the child descriptors whose values share this limit (by: tenant)",
      field.keyNode,
    );
    return {};
  }
  // Read like a descriptor key, so `by: 007` names the child written `key: 007`.
  const name = readText(r, byField);
  if (name === undefined) return {};
  if (name === "") {
    r.report(byField.path, "must not be empty (the key of a child descriptor, e.g. tenant)", byField.value);
    return {};
  }
  const by = { name, path: byField.path, line: r.lineOf(byField.value) };
  return { spec: Object.freeze({ by: name, weights }), by };
}

/** `value: weight` pairs; merge keys (`<<: *defaults`) expand, explicit pairs winning. */
function readWeights(r: DocReader, f: Field): Map<string, number> {
  const out = new Map<string, number>();
  if (f.value === null || (isScalar(f.value) && f.value.value === null)) return out;
  if (!isMap(f.value)) {
    r.report(
      f.path,
      `must be a map of values to weights (gold: 3), got ${describe(f.value)}`,
      f.value,
      f.keyNode,
    );
    return out;
  }
  addWeights(r, f.value, f.path, out);
  if (out.size > MAX_WEIGHTS) {
    r.report(
      f.path,
      `has ${out.size} entries; at most ${MAX_WEIGHTS} (list only the values whose weight is not 1)`,
      f.keyNode,
    );
  }
  return out;
}

function addWeights(r: DocReader, map: Node, path: string, out: Map<string, number>): void {
  if (!isMap(map)) {
    r.report(path, `a merged (<<) weights entry must be a map, got ${describe(map)}`, map);
    return;
  }
  const merged: Node[] = [];
  for (const pair of map.items) {
    const keyNode = pair.key as Node | null;
    if (!isScalar(keyNode) || keyNode.value === null) {
      r.report(path, `a weights key must be a value (text), got ${describe(keyNode)}`, keyNode, map);
      continue;
    }
    const value = r.resolve(pair.value);
    const key = sourceText(keyNode);
    if (key === "<<") {
      merged.push(value as Node);
      continue;
    }
    // Duplicate keys are already reported by the YAML parser; the first one wins here.
    if (out.has(key)) continue;
    const weight = readNumber(value);
    if (weight !== undefined && weight > 0 && weight <= MAX_WEIGHT) out.set(key, weight);
    else {
      r.report(
        `${path}.${key}`,
        `must be a number above 0 and at most ${MAX_WEIGHT}, got ${shown(value)}`,
        value,
        keyNode,
      );
    }
  }
  for (const src of merged) {
    const more = new Map<string, number>();
    addWeights(r, src, path, more);
    for (const [k, w] of more) if (!out.has(k)) out.set(k, w);
  }
}

function readReserve(r: DocReader, f: Field): Reserve | undefined {
  const fields = r.map(
    f.value,
    f.path,
    "reserve",
    RESERVE_CLASSES,
    {
      low: "no class is below low, so there is nothing to reserve from (name critical, high or normal)",
    },
    f.keyNode,
  );
  if (!fields) return undefined;
  if (fields.size === 0) {
    r.report(
      f.path,
      `is empty: name the classes to keep a share for (${RESERVE_CLASSES.join(", ")}), or remove it`,
      f.value,
      f.keyNode,
    );
    return undefined;
  }
  const out: Partial<Record<Priority, number>> = {};
  let sum = 0;
  let ok = true;
  for (const [k, field] of fields) {
    const v = readNumber(field.value);
    if (v === undefined || v <= 0 || v >= 1) {
      r.report(
        field.path,
        `must be a fraction above 0 and below 1, got ${shown(field.value)}`,
        field.value,
        field.keyNode,
      );
      ok = false;
      continue;
    }
    out[k as Priority] = v;
    sum += v;
  }
  if (!ok) return undefined;
  if (sum >= 1) {
    r.report(
      f.path,
      `the fractions add up to ${Number(sum.toFixed(6))}; they must add up to less than 1, or requests below every named class could never be admitted`,
      f.keyNode,
    );
    return undefined;
  }
  return Object.freeze(out);
}

/** A finite YAML number (`.inf` and `.nan` are numbers to YAML, not to a limit). */
export function readNumber(node: Node | null): number | undefined {
  if (!isScalar(node) || typeof node.value !== "number" || !Number.isFinite(node.value)) return undefined;
  return node.value;
}

/** A number as written (`.inf`, `1e3`); anything else as `describe` says it. */
export function shown(node: Node | null): string {
  return isScalar(node) && typeof node.value === "number" ? sourceText(node) : describe(node);
}
