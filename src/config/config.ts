import { decodeKey } from "./key.js";
import { type Level, resolveIn } from "./match.js";
import type { DescriptorEntry, LimitConfig, LimitRule, Resolved } from "./types.js";

/** The loaded configuration: immutable, replaced whole on reload, safe to share across requests. */
export class CompiledConfig implements LimitConfig {
  readonly domains: readonly string[];
  readonly rules: readonly LimitRule[];
  readonly files: readonly string[];
  private readonly roots: ReadonlyMap<string, Level>;
  private readonly byId: ReadonlyMap<string, LimitRule>;

  constructor(roots: ReadonlyMap<string, Level>, rules: readonly LimitRule[], files: readonly string[]) {
    this.roots = roots;
    this.domains = Object.freeze([...roots.keys()]);
    this.rules = Object.freeze([...rules]);
    this.files = Object.freeze([...files]);
    this.byId = new Map(rules.map((r) => [r.id, r]));
  }

  resolve(domain: string, entries: readonly DescriptorEntry[]): Resolved | undefined {
    const root = this.roots.get(domain);
    return root === undefined ? undefined : resolveIn(domain, root, entries);
  }

  ruleById(id: string): LimitRule | undefined {
    return this.byId.get(id);
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
  return config.resolve(decoded.domain, decoded.entries);
}
