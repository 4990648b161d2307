import { isMap, isScalar, type Node } from "yaml";
import type { ConfigProblem } from "./errors.js";
import { type PoolSpec, readPools } from "./parse-pool.js";
import { parseRule, RATE_LIMIT_FIELDS, type RuleDraft } from "./parse-rule.js";
import { PRIORITY_KEY } from "./priority.js";
import { readBool, readText } from "./values.js";
import { type DocReader, describe, type Field, type PlacementHints, parseYaml } from "./yaml-read.js";

/** Reads one file in envoyproxy/ratelimit's format into a tree of descriptor specs. */

export interface DescriptorSpec {
  readonly key: string;
  /** `""` for a key-only descriptor (matches any value); each `*` in it matches any run of characters. */
  readonly value: string;
  readonly path: string;
  /** Set on a top-level descriptor merged into a domain from another file (compile.ts). */
  readonly file?: string;
  readonly rule?: RuleDraft;
  readonly shadowMode: boolean;
  /** `shard_key: true`, or a rule with `fair_share` (which implies it). */
  readonly shardKey: boolean;
  /** Envoy's `share_threshold`: all values matching this wildcard share one counter. */
  readonly shareThreshold: boolean;
  /** Envoy's `quota_mode`: over the limit, the request is still OK unless all quota limits are over. */
  readonly quotaMode: boolean;
  /** Envoy's `detailed_metric`: the limit's metrics are keyed by the request's values. */
  readonly detailedMetric: boolean;
  /** Envoy's `value_to_metric`: this level's metric name part is the request's value. */
  readonly valueToMetric: boolean;
  /** Envoy's `metadata`: a map returned in the response's dynamic metadata. */
  readonly metadata?: Readonly<Record<string, unknown>>;
  readonly children: readonly DescriptorSpec[];
}

export interface DomainSpec {
  readonly file: string;
  readonly domain: string;
  readonly line: number | undefined;
  readonly descriptors: readonly DescriptorSpec[];
  /** `pools:`: pools of backends the document's rules may join (`rate_limit.pool`). */
  readonly pools?: readonly PoolSpec[];
}

export interface ParsedDomainFile {
  /** Every domain that could be read, even from a file with problems elsewhere. */
  readonly specs: readonly DomainSpec[];
  readonly problems: readonly ConfigProblem[];
}

const ROOT_FIELDS = ["domain", "descriptors", "pools"];
const DESCRIPTOR_FIELDS = [
  "key",
  "value",
  "rate_limit",
  "descriptors",
  "shadow_mode",
  "share_threshold",
  // Envoy's metric-naming switches (server/envoy-stats.ts).
  "detailed_metric",
  "value_to_metric",
  // Envoy's quota mode, and metadata returned in the response's dynamic metadata.
  "quota_mode",
  "metadata",
  // shardlimit: this node's path is the shard key for every limit at and below it.
  "shard_key",
];

/** What a node's ancestors set that constrains it. */
interface Above {
  /** The nearest ancestor that is a shard-key node, and why it is one. */
  readonly shardKey?: "shard_key" | "fair_share";
  /** The parent's `fair_share.by`: the child key whose values share the parent's limit. */
  readonly parentFairBy?: string;
  /** At or below a child whose key is the `by` of a fair-share limit: a limit here may borrow. */
  readonly borrowing: boolean;
}

const TOP: Above = { borrowing: false };
const DESCRIPTOR_HINTS: PlacementHints = Object.fromEntries(
  RATE_LIMIT_FIELDS.map((k) => [k, `${k} belongs inside the descriptor's rate_limit block`]),
);

export function parseDomainFile(file: string, text: string): ParsedDomainFile {
  const { problems, docs } = parseYaml(file, text);
  // A stray `---` at the end of a file is an empty document, not a mistake worth failing on.
  const filled = docs.filter((r) => !isEmpty(r.root));
  if (filled.length === 0 && problems.length === 0) {
    problems.push({
      file,
      path: "",
      line: 1,
      message: "the file is empty (expected domain: and descriptors:)",
    });
  }
  const specs: DomainSpec[] = [];
  for (const r of filled) {
    const spec = readDomain(r);
    if (spec) specs.push(spec);
  }
  return { specs, problems };
}

function isEmpty(root: Node | null): boolean {
  return root === null || (isScalar(root) && root.value === null);
}

function readDomain(r: DocReader): DomainSpec | undefined {
  const root = r.root;
  const fields = r.map(root, "", "the document", ROOT_FIELDS);
  if (!fields) return undefined;

  const domainField = fields.get("domain");
  const domain = domainField ? readText(r, domainField) : undefined;
  if (!domainField) r.report("domain", "is required (the name Envoy sends as the request's domain)", root);
  else if (domain === "") r.report("domain", "must not be empty", domainField.value, domainField.keyNode);

  const descriptorsField = fields.get("descriptors");
  const descriptors = descriptorsField ? readDescriptors(r, descriptorsField, TOP) : [];
  const poolsField = fields.get("pools");
  const pools = poolsField ? readPools(r, poolsField) : undefined;
  if (!domain) return undefined;
  return {
    file: r.file,
    domain,
    line: r.lineOf(domainField?.value),
    descriptors,
    ...(pools ? { pools } : {}),
  };
}

function readDescriptors(r: DocReader, field: Field, above: Above): DescriptorSpec[] {
  const items = r.list(field, "- key: ...");
  if (!items) return [];
  const out: DescriptorSpec[] = [];
  const seen = new Map<string, number | undefined>();
  items.forEach((item, i) => {
    const spec = readDescriptor(r, item, `${field.path}[${i}]`, above, field.keyNode);
    if (!spec) return;
    // Envoy's own identity for a level's entries: the key, plus the value when there is one.
    const identity = `${spec.key}\u0000${spec.value}`;
    if (seen.has(identity)) {
      const first = seen.get(identity);
      const what = spec.value
        ? `key ${q(spec.key)} value ${q(spec.value)}`
        : `key ${q(spec.key)} with no value`;
      r.report(
        spec.path,
        `duplicate descriptor: ${what} is already defined at line ${first} on this level`,
        item,
      );
      return;
    }
    seen.set(identity, r.lineOf(item));
    out.push(spec);
  });
  return out;
}

function readDescriptor(
  r: DocReader,
  node: Node | null,
  path: string,
  above: Above,
  fallback: Node,
): DescriptorSpec | undefined {
  const fields = r.map(node, path, "a descriptor", DESCRIPTOR_FIELDS, DESCRIPTOR_HINTS, fallback);
  if (!fields) return undefined;
  const flag = (k: string) => {
    const f = fields.get(k);
    return f ? (readBool(r, f) ?? false) : false;
  };

  const keyField = fields.get("key");
  const key = keyField ? readText(r, keyField) : undefined;
  if (!keyField) r.report(`${path}.key`, "is required", node);
  else if (key === "") r.report(keyField.path, "must not be empty", keyField.value, keyField.keyNode);
  else if (key === PRIORITY_KEY) {
    // A request's `priority` entry is taken out before matching (priority.ts), so a node with this
    // key could never be reached: refuse it rather than let its limit silently never apply.
    r.report(
      keyField.path,
      "priority is reserved for the request's priority class (an entry that selects no rule); use another key",
      keyField.value,
    );
  }
  const valueField = fields.get("value");
  const value = (valueField ? readText(r, valueField) : "") ?? "";

  const shadowMode = flag("shadow_mode");
  const explicitShardKey = flag("shard_key");
  const shareThreshold = flag("share_threshold");
  if (shareThreshold && !value.includes("*")) {
    r.report(
      `${path}.share_threshold`,
      "only applies to a wildcard value (one containing *)",
      fields.get("share_threshold")?.keyNode,
    );
  }
  const detailedMetric = flag("detailed_metric");
  const valueToMetric = flag("value_to_metric");
  const quotaMode = flag("quota_mode");
  const metadataField = fields.get("metadata");
  const metadata = metadataField ? readMetadata(r, metadataField) : undefined;

  const ruleField = fields.get("rate_limit");
  const rule = ruleField ? parseRule(r, ruleField) : undefined;
  const { shardKey, below } = checkSharing(r, path, node, key, explicitShardKey, rule, above);
  const childField = fields.get("descriptors");
  const children = childField ? readDescriptors(r, childField, below) : [];
  const by = rule?.sharing?.fairShareAt?.by;
  if (by && !children.some((c) => c.key === by.name)) {
    const keys = [...new Set(children.map((c) => c.key))];
    const listed = keys.length > 0 ? `keys below: ${keys.join(", ")}` : "this node has no child descriptors";
    r.reportAt(
      by,
      `${q(by.name)} is not the key of a child descriptor (${listed}); fair_share divides this limit among the values of one child key`,
    );
  }
  if (!key) return undefined;
  return {
    key,
    value,
    path,
    ...(rule ? { rule } : {}),
    shadowMode,
    shardKey,
    shareThreshold,
    quotaMode,
    detailedMetric,
    valueToMetric,
    ...(metadata ? { metadata } : {}),
    children,
  };
}

/** `metadata:` is free-form, as in Envoy, but must be a map: it becomes a protobuf Struct. */
function readMetadata(r: DocReader, f: Field): Record<string, unknown> | undefined {
  if (f.value === null || (isScalar(f.value) && f.value.value === null)) return undefined;
  if (!isMap(f.value)) {
    r.report(f.path, `must be a map (key: value lines), got ${describe(f.value)}`, f.value, f.keyNode);
    return undefined;
  }
  const value = r.plain(f.value);
  const bad = structProblem(value, f.path);
  if (bad !== undefined) {
    r.report(bad.path, bad.message, f.value);
    return undefined;
  }
  return value as Record<string, unknown>;
}

/** What a protobuf Struct cannot hold: non-string keys, non-finite numbers, dates, binary. */
function structProblem(v: unknown, path: string): { path: string; message: string } | undefined {
  if (v === null || typeof v === "string" || typeof v === "boolean") return undefined;
  if (typeof v === "number") {
    return Number.isFinite(v) ? undefined : { path, message: `must be a finite number, got ${v}` };
  }
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const bad = structProblem(v[i], `${path}[${i}]`);
      if (bad) return bad;
    }
    return undefined;
  }
  if (v instanceof Map) return { path, message: "has a key that is not a plain name" };
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    for (const [k, x] of Object.entries(v)) {
      const bad = structProblem(x, `${path}.${k}`);
      if (bad) return bad;
    }
    return undefined;
  }
  return { path, message: `cannot be carried in a protobuf Struct (${typeof v})` };
}

/**
 * What `fair_share` and `soft` require of the tree above a node, and what this node passes down.
 * A fair-share limit and the limits of the subjects below it are decided together, by one owner,
 * so its node places everything below it exactly as `shard_key: true` would (and, like it, only
 * once per path). `soft` borrows from a fair-share limit, so it needs one above.
 */
function checkSharing(
  r: DocReader,
  path: string,
  node: Node | null,
  key: string | undefined,
  explicitShardKey: boolean,
  rule: RuleDraft | undefined,
  above: Above,
): { shardKey: boolean; below: Above } {
  const fairAt = rule?.sharing?.fairShareAt;
  const shardKey = explicitShardKey || fairAt !== undefined;
  if (shardKey && above.shardKey) {
    const why = above.shardKey === "fair_share" ? " (fair_share implies it)" : "";
    const message = `a parent descriptor already sets shard_key${why}; only one per path`;
    if (explicitShardKey) r.report(`${path}.shard_key`, message, node);
    else {
      r.reportAt(
        fairAt!,
        `${message}, and fair_share makes this node one (its limit is decided on one owner with every limit below it)`,
      );
    }
  }
  const borrowing = above.borrowing || (key !== undefined && key === above.parentFairBy);
  const softAt = rule?.sharing?.softAt;
  if (softAt && !borrowing) {
    const hint =
      above.parentFairBy !== undefined
        ? ` (the one above is by ${q(above.parentFairBy)}, not ${q(key ?? "")})`
        : ` (give the parent's rate_limit fair_share: { by: ${key ?? "<this key>"} })`;
    r.reportAt(softAt, `soft needs a fair_share limit above it to borrow from${hint}`);
  }
  const below: Above = {
    shardKey: above.shardKey ?? (fairAt ? "fair_share" : explicitShardKey ? "shard_key" : undefined),
    borrowing,
    ...(fairAt?.by ? { parentFairBy: fairAt.by.name } : {}),
  };
  return { shardKey, below };
}

function q(s: string): string {
  return JSON.stringify(s);
}
