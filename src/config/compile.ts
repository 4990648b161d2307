import { CompiledConfig } from "./config.js";
import type { ConfigProblem } from "./errors.js";
import { escapePart } from "./key.js";
import { type KeyBranch, type Level, type MatchNode, type Wildcard, wildcard } from "./match.js";
import type { DescriptorSpec, DomainSpec } from "./parse-file.js";
import type { PoolSpec } from "./parse-pool.js";
import type { NameRef } from "./parse-rule.js";
import type { ConfigSource, LimitRule, PoolSettings } from "./types.js";

/**
 * Turns the per-file specs into one immutable config, checking what only shows across the
 * whole set: a domain defined twice, rule names reused in a domain, `replaces` naming no rule.
 * Returns the problems rather than throwing so the caller can report them with the files' own.
 */

export interface CompileResult {
  readonly config: CompiledConfig;
  readonly problems: readonly ConfigProblem[];
}

export interface CompileOptions {
  /**
   * envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG: a domain defined in several files (or documents)
   * is one domain with the top-level descriptors of all of them; a top-level descriptor defined
   * twice is still an error. Off: a domain defined twice is an error.
   */
  readonly mergeDomains?: boolean;
}

export function compile(
  specs: readonly DomainSpec[],
  sources: readonly ConfigSource[],
  options: CompileOptions = {},
): CompileResult {
  const problems: ConfigProblem[] = [];
  const roots = new Map<string, Level>();
  const owners = new Map<string, DomainSpec>();
  const rules: LimitRule[] = [];
  const pools = new Map<string, { spec: PoolSpec; file: string }>();
  for (const spec of specs) {
    for (const pool of spec.pools ?? []) {
      const first = pools.get(pool.ref.name);
      if (first) {
        problems.push(
          problem(
            spec.file,
            pool.ref,
            `pool ${JSON.stringify(pool.ref.name)} is already defined at ${first.file}:${first.spec.ref.line} (${first.spec.ref.path}); each pool is defined once`,
          ),
        );
      } else pools.set(pool.ref.name, { spec: pool, file: spec.file });
    }
  }
  const merged = options.mergeDomains ? mergeDomains(specs, problems) : specs;
  for (const spec of merged) {
    const owner = owners.get(spec.domain);
    if (owner) {
      const where = owner.line !== undefined ? `${owner.file}:${owner.line}` : owner.file;
      problems.push({
        file: spec.file,
        path: "domain",
        ...(spec.line !== undefined ? { line: spec.line } : {}),
        message: `domain ${JSON.stringify(spec.domain)} is already defined in ${where}; each domain must live in one file`,
      });
      continue;
    }
    owners.set(spec.domain, spec);
    const domain = new DomainBuilder(spec, pools);
    roots.set(spec.domain, domain.level(spec.descriptors, "") ?? new Map());
    problems.push(...domain.checkNames());
    rules.push(...domain.rules);
  }
  const poolSettings: PoolSettings[] = [...pools.values()].map((p) => p.spec.settings);
  return {
    config: new CompiledConfig(roots, rules, sources, options.mergeDomains === true, poolSettings),
    problems,
  };
}

/**
 * One spec per domain, its descriptors those of every spec of the domain in order. A top-level
 * key+value defined by two of them is reported as Envoy does ("duplicate descriptor"), and the
 * later one dropped; the specs keep their own files for messages.
 */
function mergeDomains(specs: readonly DomainSpec[], problems: ConfigProblem[]): DomainSpec[] {
  const byDomain = new Map<string, { spec: DomainSpec; descriptors: DescriptorSpec[] }>();
  const seen = new Map<string, { file: string; path: string }>();
  for (const spec of specs) {
    let entry = byDomain.get(spec.domain);
    if (!entry) {
      entry = { spec, descriptors: [] };
      byDomain.set(spec.domain, entry);
    }
    for (const d of spec.descriptors) {
      const identity = `${spec.domain}\u0000${d.key}\u0000${d.value}`;
      const first = seen.get(identity);
      if (first) {
        const what = d.value
          ? `key ${JSON.stringify(d.key)} value ${JSON.stringify(d.value)}`
          : `key ${JSON.stringify(d.key)} with no value`;
        problems.push({
          file: spec.file,
          path: d.path,
          message: `duplicate descriptor in merged domain ${JSON.stringify(spec.domain)}: ${what} is already defined in ${first.file} at ${first.path}`,
        });
        continue;
      }
      seen.set(identity, { file: spec.file, path: d.path });
      entry.descriptors.push(spec === entry.spec ? d : { ...d, file: spec.file });
    }
  }
  return [...byDomain.values()].map(({ spec, descriptors }) => ({ ...spec, descriptors }));
}

interface MutableBranch {
  exact: Map<string, MatchNode>;
  wildcards: Wildcard[];
  any: MatchNode | undefined;
}

class DomainBuilder {
  readonly rules: LimitRule[] = [];
  private readonly names: NameRef[] = [];
  private readonly replaces: NameRef[] = [];
  /** Rules naming a pool no document defines. */
  private readonly poolProblems: ConfigProblem[] = [];

  constructor(
    private readonly spec: DomainSpec,
    private readonly pools: ReadonlyMap<string, { spec: PoolSpec }> = new Map(),
  ) {}

  level(descriptors: readonly DescriptorSpec[], parentId: string, file = this.spec.file): Level | undefined {
    if (descriptors.length === 0) return undefined;
    const level = new Map<string, MutableBranch>();
    for (const d of descriptors) {
      const part = d.value ? `${escapePart(d.key)}=${escapePart(d.value)}` : escapePart(d.key);
      const idPath = parentId ? `${parentId}/${part}` : part;
      const from = d.file ?? file;
      const rule = this.rule(d, idPath, from);
      const node: MatchNode = {
        rule,
        children: this.level(d.children, idPath, from),
        shardKey: d.shardKey,
        sharedValue: d.shareThreshold ? d.value : undefined,
        fairShare: rule?.fairShare,
        ...(d.value.includes("*") ? { pattern: d.value } : {}),
        ...(d.valueToMetric ? { valueToMetric: true } : {}),
      };
      let branch = level.get(d.key);
      if (!branch) {
        branch = { exact: new Map(), wildcards: [], any: undefined };
        level.set(d.key, branch);
      }
      if (d.value === "") branch.any = node;
      else {
        branch.exact.set(d.value, node);
        if (d.value.includes("*")) branch.wildcards.push(wildcard(d.value, node));
      }
    }
    return level as Map<string, KeyBranch>;
  }

  private rule(d: DescriptorSpec, idPath: string, file: string): LimitRule | undefined {
    const draft = d.rule;
    if (!draft) return undefined;
    if (draft.name) this.names.push(draft.name);
    this.replaces.push(...draft.replaces);
    const pool = draft.pool ? this.pools.get(draft.pool.name)?.spec.settings : undefined;
    if (draft.pool && !pool) {
      const known = [...this.pools.keys()].map((n) => JSON.stringify(n)).join(", ") || "none";
      this.poolProblems.push(
        problem(
          this.spec.file,
          draft.pool,
          `no pool named ${JSON.stringify(draft.pool.name)} (pools: ${known}); define it under pools:`,
        ),
      );
      return undefined;
    }
    if (!draft.settings) return undefined;
    const name = draft.name?.name;
    const rule: LimitRule = Object.freeze({
      id: `${escapePart(this.spec.domain)}/${idPath}${name ? `#${name}` : ""}`,
      ...(name ? { name } : {}),
      domain: this.spec.domain,
      ...draft.settings,
      ...(pool ? { pool } : {}),
      shadowMode: d.shadowMode,
      ...(d.quotaMode ? { quotaMode: true } : {}),
      ...(d.metadata ? { metadata: d.metadata } : {}),
      ...(d.detailedMetric ? { detailedMetric: true } : {}),
      replaces: Object.freeze(draft.replaces.map((r) => r.name)),
      source: Object.freeze({ file, path: d.path }),
    });
    this.rules.push(rule);
    return rule;
  }

  /** Names are how `replaces` points at a rule, so within a domain each must be unique and known. */
  checkNames(): ConfigProblem[] {
    const file = this.spec.file;
    const problems: ConfigProblem[] = [...this.poolProblems];
    const byName = new Map<string, NameRef>();
    for (const ref of this.names) {
      const first = byName.get(ref.name);
      if (first) {
        problems.push(
          problem(
            file,
            ref,
            `rule name ${JSON.stringify(ref.name)} is already used at ${first.path} (line ${first.line}); names must be unique within a domain`,
          ),
        );
      } else byName.set(ref.name, ref);
    }
    for (const ref of this.replaces) {
      if (!byName.has(ref.name)) {
        const known = [...byName.keys()].map((n) => JSON.stringify(n)).join(", ") || "none";
        problems.push(
          problem(
            file,
            ref,
            `no rule named ${JSON.stringify(ref.name)} in domain ${JSON.stringify(this.spec.domain)} (named rules: ${known})`,
          ),
        );
      }
    }
    return problems;
  }
}

function problem(file: string, ref: NameRef, message: string): ConfigProblem {
  return { file, path: ref.path, ...(ref.line !== undefined ? { line: ref.line } : {}), message };
}
