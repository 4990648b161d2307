import { encodeKey } from "./key.js";
import {
  type DescriptorEntry,
  type FairShareSpec,
  type LimitRule,
  poolShardKey,
  type Resolved,
} from "./types.js";

/**
 * The descriptor tree, laid out for per-request lookup: one Map lookup for the key and one for
 * the value per level, a scan only over that key's wildcard values. Matching follows
 * envoyproxy/ratelimit (src/config/config_impl.go, GetLimit):
 * - at each level an exact key+value node wins, then the first wildcard (a value with `*` in it,
 *   anywhere and any number of times, each matching any run of characters, in file order) that
 *   the value matches (a bare `*` matches any value), then a key-only node;
 * - no backtracking: once a level picked a node, a miss below it is a miss;
 * - the rule is the one on the node reached by the LAST entry. A rule on an intermediate node does
 *   not apply to a longer descriptor (Envoy README, Example 4), and a request deeper than the tree
 *   matches nothing.
 * Counters are keyed by the request's own values (Envoy's cache key does the same), so a key-only
 * or wildcard node gives each distinct value its own counter, unless the wildcard node sets
 * `share_threshold: true`, in which case its pattern stands in for the value and all matching
 * values share one counter, as in Envoy.
 *
 * shardlimit's `fair_share`: when a descriptor passes through a node whose rule has
 * `fair_share: { by }` and its next entry's key is `by`, that entry's value is a subject (a tenant)
 * of the node's limit, and the request is charged to that limit too: as `parent` of the rule the
 * last entry reaches, or, when that node has no rule, as the resolution itself. The fair-share
 * node is a shard-key node, so both land on one owner. A subject counted under a shared wildcard
 * is named by the pattern, as its counter is, so resolving a counter key again gives the same
 * subject. Matching itself is unchanged: a miss is still a miss.
 */

export interface MatchNode {
  readonly rule: LimitRule | undefined;
  readonly children: Level | undefined;
  readonly shardKey: boolean;
  /** `share_threshold`: the pattern counted in place of the request's value. */
  readonly sharedValue: string | undefined;
  /** The rule's `fair_share` (set only when `rule` is). */
  readonly fairShare: FairShareSpec | undefined;
  /** A wildcard node's pattern (its value as written). */
  readonly pattern?: string;
  /** Envoy's `value_to_metric`: this level names the request's value in metric names. */
  readonly valueToMetric?: boolean;
}

/** A wildcard value split on its `*`s: `a*b*c` -> ["a", "b", "c"]. At least two parts. */
export interface Wildcard {
  readonly parts: readonly string[];
  /** Sum of the parts' lengths: no shorter value can match. */
  readonly fixed: number;
  readonly node: MatchNode;
}

export function wildcard(pattern: string, node: MatchNode): Wildcard {
  const parts = pattern.split("*");
  return { parts, fixed: parts.reduce((n, p) => n + p.length, 0), node };
}

/**
 * Whether `value` matches a wildcard: it starts with the first part, ends with the last, and has
 * the middle parts in order in between, none overlapping (each `*` matches zero or more chars).
 */
export function wildcardMatches(w: Wildcard, value: string): boolean {
  const { parts } = w;
  if (value.length < w.fixed) return false;
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (!value.startsWith(first) || !value.endsWith(last)) return false;
  let at = first.length;
  const end = value.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i]!;
    const found = value.indexOf(part, at);
    if (found < 0 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

export interface KeyBranch {
  /** Exact values. Wildcard nodes are here too under their pattern, so a counter key that
   *  carries a shared pattern resolves back to the same node. */
  readonly exact: ReadonlyMap<string, MatchNode>;
  readonly wildcards: readonly Wildcard[];
  readonly any: MatchNode | undefined;
}

export type Level = ReadonlyMap<string, KeyBranch>;

export function resolveIn(
  domain: string,
  root: Level,
  entries: readonly DescriptorEntry[],
): Resolved | undefined {
  const n = entries.length;
  let level: Level | undefined = root;
  let node: MatchNode | undefined;
  let shardDepth = -1;
  let shared: (string | undefined)[] | undefined;
  // The fair-share node passed with its `by` entry next. At most one per path: fair_share makes a
  // node a shard-key node, and those do not nest (parse-file.ts).
  let fair: MatchNode | undefined;
  let fairDepth = -1;
  for (let i = 0; i < n; i++) {
    if (level === undefined) return undefined;
    const entry = entries[i]!;
    const branch = level.get(entry.key);
    if (branch === undefined) return undefined;
    node = pick(branch, entry.value);
    if (node === undefined) return undefined;
    if (node.shardKey) shardDepth = i;
    if (node.sharedValue !== undefined) {
      shared ??= [];
      shared[i] = node.sharedValue;
    }
    if (node.fairShare !== undefined && i + 1 < n && entries[i + 1]!.key === node.fairShare.by) {
      fair = node;
      fairDepth = i;
    }
    level = node.children;
  }
  const rule = node?.rule;
  if (rule === undefined && fair === undefined) return undefined;
  const counterKey = encodeKey(domain, shared ? withShared(entries, shared) : entries);
  // A pool's limits are all placed by the pool's key: its owner sheds and lends for all of them.
  const pool = rule?.pool ?? fair?.rule?.pool;
  const shardKey =
    pool !== undefined
      ? poolShardKey(pool.name)
      : shardDepth < 0 || shardDepth === n - 1
        ? counterKey
        : keyPrefix(counterKey, shardDepth + 1);
  if (fair === undefined) return { rule: rule!, counterKey, shardKey };

  // The fair-share node is the shard-key node, so its counter key is the shard key already.
  const groupKey =
    shardDepth === fairDepth && pool === undefined ? shardKey : keyPrefix(counterKey, fairDepth + 1);
  const id = shared?.[fairDepth + 1] ?? entries[fairDepth + 1]!.value;
  const charge: Resolved = {
    rule: fair.rule!,
    counterKey: groupKey,
    shardKey,
    subject: { id, weight: fair.fairShare!.weights.get(id) ?? 1 },
  };
  return rule === undefined ? charge : { rule, counterKey, shardKey, parent: charge };
}

/** The node a value selects on one key's branch: exact, else the first matching wildcard, else key-only. */
function pick(branch: KeyBranch, value: string): MatchNode | undefined {
  const node = branch.exact.get(value);
  if (node !== undefined) return node;
  for (const w of branch.wildcards) if (wildcardMatches(w, value)) return w.node;
  return branch.any;
}

/**
 * The name envoyproxy/ratelimit gives the stats of the limit `entries` reach, `undefined` when
 * none does: `domain.key_value.key` from the config's nodes (a wildcard's pattern, a key-only
 * node's key alone), with the request's value where a node sets `value_to_metric`; or, when the
 * limit sets `detailed_metric`, every entry as `key_value` with the request's values (a
 * `share_threshold` wildcard's pattern in place of its value).
 */
export function metricKeyIn(
  domain: string,
  root: Level,
  entries: readonly DescriptorEntry[],
): string | undefined {
  let level: Level | undefined = root;
  let node: MatchNode | undefined;
  // Built by concatenation, not an array and join: this runs for every descriptor decided.
  let named = domain;
  // Per entry, the value a shared pattern matched it as (detailed_metric names it so); made only
  // when an entry matched one, and the detailed names only when the rule asks for them.
  let shared: (string | undefined)[] | undefined;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const branch: KeyBranch | undefined = level?.get(e.key);
    node = branch === undefined ? undefined : pick(branch, e.value);
    if (branch === undefined || node === undefined) return undefined;
    const how = branch.exact.get(e.value) === node ? "exact" : node === branch.any ? "any" : "wildcard";
    const sharedValue = how === "wildcard" ? node.sharedValue : undefined;
    const value =
      how === "exact" || node.valueToMetric === true
        ? (sharedValue ?? e.value)
        : how === "wildcard"
          ? node.pattern!
          : "";
    named += value === "" ? `.${e.key}` : `.${e.key}_${value}`;
    if (sharedValue !== undefined) {
      shared ??= [];
      shared[i] = sharedValue;
    }
    level = node.children;
  }
  if (node?.rule === undefined) return undefined;
  if (!node.rule.detailedMetric) return named;
  const detailed: string[] = [domain];
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const sv = shared?.[i];
    // With a shared pattern in it, Envoy writes an entry with an empty value as `key`, not `key_`.
    detailed.push(
      sv !== undefined
        ? `${e.key}_${sv}`
        : shared !== undefined && e.value === ""
          ? e.key
          : `${e.key}_${e.value}`,
    );
  }
  return detailed.join(".");
}

function withShared(entries: readonly DescriptorEntry[], shared: readonly (string | undefined)[]) {
  return entries.map((e, i) => {
    const value = shared[i];
    return value === undefined ? e : { key: e.key, value };
  });
}

/** The domain and first `depth` entries of a canonical key. Escaped parts never contain `/`. */
function keyPrefix(key: string, depth: number): string {
  let at = -1;
  for (let i = 0; i <= depth; i++) at = key.indexOf("/", at + 1);
  return key.slice(0, at);
}
