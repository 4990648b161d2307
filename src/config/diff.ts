import { ConfigError, type ConfigProblem } from "./errors.js";
import type { LimitConfig, LimitRule } from "./types.js";

/** What a reload changes, by domain and by rule id; each list sorted. */
export interface ConfigDiff {
  readonly domainsAdded: readonly string[];
  readonly domainsRemoved: readonly string[];
  readonly rulesAdded: readonly string[];
  readonly rulesRemoved: readonly string[];
  /** Same id, different limit, window, algorithm or behaviour (where it is written is ignored). */
  readonly rulesChanged: readonly string[];
}

export function diffConfigs(prev: LimitConfig, next: LimitConfig): ConfigDiff {
  const sorted = (xs: Iterable<string>) => [...xs].sort();
  const prevDomains = new Set(prev.domains);
  const nextDomains = new Set(next.domains);
  const prevRules = new Map(prev.rules.map((r) => [r.id, r]));
  const nextRules = new Map(next.rules.map((r) => [r.id, r]));
  return {
    domainsAdded: sorted(next.domains.filter((d) => !prevDomains.has(d))),
    domainsRemoved: sorted(prev.domains.filter((d) => !nextDomains.has(d))),
    rulesAdded: sorted([...nextRules.keys()].filter((id) => !prevRules.has(id))),
    rulesRemoved: sorted([...prevRules.keys()].filter((id) => !nextRules.has(id))),
    rulesChanged: sorted(
      [...nextRules]
        .filter(([id, r]) => {
          const old = prevRules.get(id);
          return old !== undefined && behaviour(old) !== behaviour(r);
        })
        .map(([id]) => id),
    ),
  };
}

/**
 * Everything about a rule that decides requests; not `source` (moving a rule changes nothing).
 * Maps (`fair_share` weights) would stringify as `{}`, hiding a changed weight: they are written
 * as their entries, sorted, since their order in the file decides nothing.
 */
function behaviour(r: LimitRule): string {
  const { source: _source, ...rest } = r;
  return JSON.stringify(rest, (_key, value: unknown) =>
    value instanceof Map ? [...value].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : value,
  );
}

/**
 * What a reload would remove, as problems: a request to a removed domain, or one that matched
 * only a removed rule, is no longer limited at all, which a typo or a lost file does silently.
 */
export function removalProblems(prev: LimitConfig, diff: ConfigDiff): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const prevRules = new Map(prev.rules.map((r) => [r.id, r]));
  const removedDomains = new Set(diff.domainsRemoved);
  for (const d of diff.domainsRemoved) {
    const rules = prev.rules.filter((r) => r.domain === d).map((r) => r.id);
    problems.push({
      file: prev.rules.find((r) => r.domain === d)?.source.file ?? prev.files.join(", "),
      path: "",
      message: `this reload removes domain "${d}" (rules ${rules.join(", ")}): its requests would be unlimited`,
    });
  }
  for (const id of diff.rulesRemoved) {
    const r = prevRules.get(id)!;
    if (removedDomains.has(r.domain)) continue;
    problems.push({
      file: r.source.file,
      path: r.source.path,
      message: `this reload removes rule "${id}": requests it limited would fall to a less specific rule or none`,
    });
  }
  return problems;
}

/** A reload refused because it removes a domain or a rule (see `ConfigWatcherOptions.allowRemoval`). */
export class LimitRemovalError extends ConfigError {}
