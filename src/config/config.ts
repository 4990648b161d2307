import { createHash } from "node:crypto";
import { DEFAULT_PRIORITY, PRIORITY_RANK } from "../core/priority.js";
import { decodeKey } from "./key.js";
import { type Level, metricKeyIn, resolveIn } from "./match.js";
import { splitPriority } from "./priority.js";
import type {
  ConfigSource,
  DescriptorEntry,
  LimitConfig,
  LimitRule,
  PoolSettings,
  Resolved,
} from "./types.js";

/** The loaded configuration: immutable, replaced whole on reload, safe to share across requests. */
export class CompiledConfig implements LimitConfig {
  readonly domains: readonly string[];
  readonly rules: readonly LimitRule[];
  readonly files: readonly string[];
  readonly sources: readonly ConfigSource[];
  private digest: string | undefined;
  private readonly roots: ReadonlyMap<string, Level>;
  private readonly byId: ReadonlyMap<string, LimitRule>;
  readonly pools: readonly PoolSettings[];

  readonly mergeDomains: boolean;

  constructor(
    roots: ReadonlyMap<string, Level>,
    rules: readonly LimitRule[],
    sources: readonly ConfigSource[],
    mergeDomains = false,
    pools: readonly PoolSettings[] = [],
  ) {
    this.mergeDomains = mergeDomains;
    this.pools = Object.freeze([...pools]);
    this.roots = roots;
    this.domains = Object.freeze([...roots.keys()]);
    this.rules = Object.freeze([...rules]);
    this.sources = Object.freeze([...sources]);
    this.files = Object.freeze(sources.map((s) => s.file));
    this.byId = new Map(rules.map((r) => [r.id, r]));
  }

  get version(): string {
    if (this.digest === undefined) {
      const h = createHash("sha256");
      for (const s of this.sources) h.update(`${s.file.length}:${s.file}${s.text.length}:${s.text}`);
      this.digest = h.digest("hex").slice(0, 16);
    }
    return this.digest;
  }

  resolve(domain: string, entries: readonly DescriptorEntry[]): Resolved | undefined {
    const root = this.roots.get(domain);
    return root === undefined ? undefined : resolveIn(domain, root, entries);
  }

  ruleById(id: string): LimitRule | undefined {
    return this.byId.get(id);
  }

  metricKey(domain: string, entries: readonly DescriptorEntry[]): string | undefined {
    const root = this.roots.get(domain);
    return root === undefined ? undefined : metricKeyIn(domain, root, entries);
  }
}

/**
 * Resolves a canonical counter key (`domain/k1=v1/k2=v2`, as clients send in batched reports).
 * A string is a malformed key's error message, returned rather than thrown since bad keys arrive
 * one item at a time inside batches; `undefined` means no limit applies.
 */
export function resolveKey(config: LimitConfig, counterKey: string): Resolved | undefined | string {
  const decoded = decodeKey(counterKey);
  if (typeof decoded === "string") return decoded;
  // A gateway reports each class of a key under the key with its `priority` entry.
  const split = splitPriority(decoded.entries);
  if (typeof split === "string") return split;
  const r = config.resolve(decoded.domain, split.entries);
  return r === undefined || split.priority === DEFAULT_PRIORITY
    ? r
    : { ...r, rank: PRIORITY_RANK[split.priority] };
}
