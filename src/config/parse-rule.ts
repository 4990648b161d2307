import type { Node } from "yaml";
import { readGlobal } from "./parse-global.js";
import { readResource } from "./parse-resource.js";
import { readSharing, SHARING_FIELDS, type SharingRefs } from "./parse-sharing.js";
import {
  ALGORITHMS,
  type Algorithm,
  type FailMode,
  type LimitRule,
  UNIT_SECONDS,
  type Unit,
} from "./types.js";
import { MAX_UINT32, readBool, readChoice, readDuration, readInt, readString } from "./values.js";
import type { DocReader, Field, NameRef, PlacementHints } from "./yaml-read.js";

export type { NameRef };

/** Reads one `rate_limit:` block: Envoy's fields plus shardlimit's extensions (see examples/config.yaml). */

export const UNITS: readonly Unit[] = ["second", "minute", "hour", "day", "week", "month", "year"];
const FAIL_MODES: readonly FailMode[] = ["open", "closed"];

const ENVOY_FIELDS = ["unit", "requests_per_unit", "unlimited", "name", "replaces"] as const;
const EXTENSION_FIELDS = [
  "algorithm",
  "window",
  "burst",
  "cost_unit",
  "lease_timeout",
  "local_allowance",
  "fail_mode",
  ...SHARING_FIELDS,
  "resource",
  "global",
  // issue 14: the pool of backends this limit is attached to (a name under the document's pools:).
  "pool",
] as const;
export const RATE_LIMIT_FIELDS: readonly string[] = [...ENVOY_FIELDS, ...EXTENSION_FIELDS];

/** Descriptor-level fields written inside `rate_limit` by mistake (Envoy puts them one level up). */
export const RATE_LIMIT_HINTS: PlacementHints = Object.fromEntries(
  [
    "key",
    "value",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "metadata",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "shard_key",
  ].map((k) => [k, `${k} belongs on the descriptor (next to key and value), not inside rate_limit`]),
);

const MAX_WINDOW_MS = UNIT_SECONDS.year * 1000;
const MAX_LEASE_MS = UNIT_SECONDS.day * 1000;
const DEFAULT_LEASE_MS = 30_000;
const MAX_COST_UNIT_LENGTH = 64;

export type RuleSettings = Omit<LimitRule, "id" | "name" | "domain" | "source" | "shadowMode" | "replaces">;
/** What the algorithm fields give, before `fair_share`, `reserve` and `soft` are added. */
type LimitSettings = Omit<RuleSettings, "fairShare" | "reserve" | "soft" | "global">;

/** A parsed `rate_limit` block. Name and replaces survive even when other fields were invalid. */
export interface RuleDraft {
  readonly name?: NameRef;
  readonly replaces: readonly NameRef[];
  /** `undefined` when a field was invalid (already reported). */
  readonly settings?: RuleSettings;
  /** Where `fair_share` and `soft: true` were written, for the checks against the tree. */
  readonly sharing?: SharingRefs;
  /** `pool:`, resolved against the document's `pools:` in compile.ts. */
  readonly pool?: NameRef;
}

export function parseRule(r: DocReader, field: Field): RuleDraft {
  const fields = r.map(
    field.value,
    field.path,
    "rate_limit",
    RATE_LIMIT_FIELDS,
    RATE_LIMIT_HINTS,
    field.keyNode,
  );
  if (!fields) return { replaces: [] };
  const at = (k: string) => fields.get(k);
  const before = r.problems.length;

  const name = readName(r, at("name"));
  const replaces = readReplaces(r, at("replaces"), name?.name);
  const unlimited = at("unlimited") ? readBool(r, at("unlimited")!) : false;
  const algorithm = unlimited
    ? undefined
    : (readOptChoice(r, at("algorithm"), "an algorithm", ALGORITHMS) ?? "fixed_window");
  const limits =
    algorithm === undefined
      ? unlimitedSettings(r, fields)
      : limitedSettings(r, fields, algorithm, field.value as Node, field.path);
  const sharing = readSharing(r, fields, algorithm ?? "unlimited");
  const resource = readResource(r, fields, algorithm ?? "unlimited");
  const global = readGlobal(r, at("global"), algorithm ?? "unlimited");
  const pool = readName(r, at("pool"));
  if (pool && algorithm === "concurrency") {
    r.report(
      pool.path,
      "does not apply to algorithm concurrency (a pool sheds and lends rate)",
      at("pool")?.keyNode,
    );
  }
  const ok = limits !== undefined && r.problems.length === before;
  const measured = resource ? { resource, costUnit: resource.name } : {};
  return {
    ...(name ? { name } : {}),
    ...(pool ? { pool } : {}),
    replaces,
    ...(ok
      ? { settings: { ...limits, ...sharing.settings, ...measured, ...(global ? { global } : {}) } }
      : {}),
    sharing: sharing.refs,
  };
}

function readName(r: DocReader, f: Field | undefined): NameRef | undefined {
  if (!f) return undefined;
  const name = readString(r, f);
  if (name === undefined) return undefined;
  if (name === "") {
    r.report(f.path, "must not be empty (leave name out instead)", f.value, f.keyNode);
    return undefined;
  }
  return { name, path: f.path, line: r.lineOf(f.value) };
}

function readReplaces(r: DocReader, f: Field | undefined, ownName: string | undefined): NameRef[] {
  if (!f) return [];
  const items = r.list(f, "- name: other_rule");
  const out: NameRef[] = [];
  items?.forEach((item, i) => {
    const path = `${f.path}[${i}]`;
    const entry = r.map(item, path, "a replaces entry", ["name"], {}, f.keyNode);
    const nameField = entry?.get("name");
    if (entry && !nameField) r.report(`${path}.name`, "is required", item);
    const ref = nameField ? readName(r, nameField) : undefined;
    if (!ref) return;
    if (ref.name === ownName) r.report(ref.path, "a rule cannot replace itself", nameField?.value);
    else out.push(ref);
  });
  return out;
}

type Fields = Map<string, Field>;

function unlimitedSettings(r: DocReader, fields: Fields): LimitSettings {
  // Envoy rejects a unit on an unlimited rule; the extensions that shape a limit are just as moot.
  for (const k of ["unit", "window", "algorithm", "burst", "lease_timeout"]) {
    const f = fields.get(k);
    if (f) r.report(f.path, "has no effect on an unlimited rule (unlimited: true); remove it", f.keyNode);
  }
  return {
    algorithm: "fixed_window",
    limit: MAX_UINT32,
    windowMs: 1000,
    burst: MAX_UINT32,
    unit: "second",
    costUnit: readCostUnit(r, fields.get("cost_unit")) ?? "requests",
    unlimited: true,
    leaseTimeoutMs: DEFAULT_LEASE_MS,
    localAllowance: readOptInt(r, fields.get("local_allowance"), 0) ?? 1,
    failMode: readOptChoice(r, fields.get("fail_mode"), "a fail mode", FAIL_MODES) ?? "open",
  };
}

function limitedSettings(
  r: DocReader,
  fields: Fields,
  algorithm: Algorithm,
  mapNode: Node,
  path: string,
): LimitSettings | undefined {
  const unitField = fields.get("unit");
  const unit = unitField ? readChoice(r, unitField, "a unit", UNITS, true) : undefined;
  const windowField = fields.get("window");
  const window = windowField ? readDuration(r, windowField, 1, MAX_WINDOW_MS) : undefined;
  const rpuField = fields.get("requests_per_unit");
  const limit = rpuField ? readInt(r, rpuField, 0) : undefined;
  const burstField = fields.get("burst");
  const burst = burstField ? readInt(r, burstField, 1) : undefined;
  const leaseField = fields.get("lease_timeout");
  const lease = leaseField ? readDuration(r, leaseField, 1, MAX_LEASE_MS) : undefined;
  const costUnit = readCostUnit(r, fields.get("cost_unit"));
  const localAllowance = readOptInt(r, fields.get("local_allowance"), 0);
  const failMode = readOptChoice(r, fields.get("fail_mode"), "a fail mode", FAIL_MODES);

  if (!rpuField) {
    r.report(`${path}.requests_per_unit`, "is required (or set unlimited: true)", mapNode);
  }
  if (algorithm === "concurrency") {
    if (windowField) {
      r.report(
        windowField.path,
        "does not apply to algorithm concurrency (use lease_timeout)",
        windowField.keyNode,
      );
    }
  } else if (!unitField && !windowField) {
    r.report(`${path}.unit`, `is required (${UNITS.join(", ")}), or give a window such as 10s`, mapNode);
  }
  if (burstField && algorithm !== "token_bucket") {
    r.report(
      burstField.path,
      `only applies to algorithm token_bucket (this rule is ${algorithm})`,
      burstField.keyNode,
    );
  }
  if (leaseField && algorithm !== "concurrency") {
    r.report(
      leaseField.path,
      `only applies to algorithm concurrency (this rule is ${algorithm})`,
      leaseField.keyNode,
    );
  }
  if (limit === undefined) return undefined;

  const windowMs = window ?? (unit ? UNIT_SECONDS[unit] * 1000 : 1000);
  return {
    algorithm,
    limit,
    windowMs,
    burst: burst ?? limit,
    unit: unit ?? reportingUnit(windowMs),
    costUnit: costUnit ?? "requests",
    unlimited: false,
    leaseTimeoutMs: lease ?? DEFAULT_LEASE_MS,
    // One unit lets a gateway start serving a new key before its first report returns; a
    // `requests_per_unit: 0` rule (Envoy's way to block a value) must stay fully blocked.
    localAllowance: localAllowance ?? Math.min(1, limit),
    failMode: failMode ?? "open",
  };
}

/** A window given without `unit` is reported to Envoy in the largest unit that divides it evenly. */
function reportingUnit(windowMs: number): Unit {
  let best: Unit = "second";
  for (const u of UNITS) {
    const ms = UNIT_SECONDS[u] * 1000;
    if (windowMs % ms === 0 && ms > UNIT_SECONDS[best] * 1000) best = u;
  }
  return best;
}

function readCostUnit(r: DocReader, f: Field | undefined): string | undefined {
  if (!f) return undefined;
  const s = readString(r, f);
  if (s === undefined) return undefined;
  if (s.trim() === "" || s.length > MAX_COST_UNIT_LENGTH) {
    r.report(f.path, `must be a short name such as requests or tokens, got ${JSON.stringify(s)}`, f.value);
    return undefined;
  }
  return s;
}

function readOptInt(r: DocReader, f: Field | undefined, min: number): number | undefined {
  return f ? readInt(r, f, min) : undefined;
}

function readOptChoice<T extends string>(
  r: DocReader,
  f: Field | undefined,
  what: string,
  choices: readonly T[],
): T | undefined {
  return f ? readChoice(r, f, what, choices) : undefined;
}
