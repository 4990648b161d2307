import { isMap, isScalar, type Node } from "yaml";
import type { PoolSettings } from "../core/pool.js";
import { type DocReader, describe, type Field, type NameRef, sourceText } from "./yaml-read.js";

/**
 * Reads a document's `pools:` section: pools of backends by name, each with the utilisation its
 * controller holds it at (`target`) and the one below which it lends idle capacity to requests
 * over their quotas (`idle_below`, default target − 0.2). A rule joins a pool with
 * `rate_limit.pool: <name>`; compile.ts resolves the names.
 *
 *   pools:
 *     gpu: { target: 0.8, idle_below: 0.5 }
 */

const POOL_FIELDS = ["target", "idle_below"];
const DEFAULT_IDLE_MARGIN = 0.2;
/** Pool names travel in keys (`pool/<name>`) and metric labels: short and plain. */
const POOL_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export interface PoolSpec {
  readonly settings: PoolSettings;
  readonly ref: NameRef;
}

export function readPools(r: DocReader, field: Field): PoolSpec[] {
  const node = field.value;
  if (!isMap(node)) {
    r.report(field.path, `pools must be a map of pool names, got ${describe(node)}`, node, field.keyNode);
    return [];
  }
  const out: PoolSpec[] = [];
  for (const pair of node.items) {
    const keyNode = pair.key as Node | null;
    if (!isScalar(keyNode) || typeof keyNode.value !== "string" || !POOL_NAME.test(keyNode.value)) {
      r.report(
        field.path,
        `a pool name must be 1-64 letters, digits, '_', '.' or '-', got ${describe(keyNode)}`,
        keyNode,
        node,
      );
      continue;
    }
    const name = keyNode.value;
    const path = `${field.path}.${name}`;
    const fields = r.map(r.resolve(pair.value), path, `pool ${name}`, POOL_FIELDS, {}, keyNode);
    if (!fields) continue;
    const targetField = fields.get("target");
    if (!targetField) {
      r.report(`${path}.target`, "is required (the utilisation to hold the pool at, e.g. 0.8)", keyNode);
      continue;
    }
    const target = readFraction(r, targetField, 0, 1, true);
    if (target === undefined) continue;
    const idleField = fields.get("idle_below");
    const idleBelow = idleField
      ? readFraction(r, idleField, 0, target, false)
      : Math.max(0, Math.round((target - DEFAULT_IDLE_MARGIN) * 1e6) / 1e6);
    if (idleBelow === undefined) continue;
    if (idleField && idleBelow === target) {
      r.report(idleField.path, `must be below target ${target}, got ${idleBelow}`, idleField.value);
      continue;
    }
    out.push({ settings: { name, target, idleBelow }, ref: { name, path, line: r.lineOf(keyNode) } });
  }
  return out;
}

/** A number within [min, max] (`min` excluded when `openMin`). */
function readFraction(
  r: DocReader,
  f: Field,
  min: number,
  max: number,
  openMin: boolean,
): number | undefined {
  const node = f.value;
  if (!isScalar(node) || typeof node.value !== "number" || !Number.isFinite(node.value)) {
    r.report(f.path, `must be a number, got ${describe(node)}`, node, f.keyNode);
    return undefined;
  }
  const v = node.value;
  if ((openMin ? v <= min : v < min) || v > max) {
    r.report(f.path, `must be within ${openMin ? "(" : "["}${min}, ${max}], got ${sourceText(node)}`, node);
    return undefined;
  }
  return v;
}
