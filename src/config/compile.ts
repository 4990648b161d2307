import { CompiledConfig } from "./config.js";
import type { ConfigProblem } from "./errors.js";
import { escapePart } from "./key.js";
import type { KeyBranch, Level, MatchNode } from "./match.js";
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

export function compile(specs: readonly DomainSpec[], sources: readonly ConfigSource[]): CompileResult {
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
  for (const spec of specs) {
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
  return { config: new CompiledConfig(roots, rules, sources, poolSettings), problems };
}

interface MutableBranch {
  exact: Map<string, MatchNode>;
  wildcards: { prefix: string; node: MatchNode }[];
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

  level(descriptors: readonly DescriptorSpec[], parentId: string): Level | undefined {
    if (descriptors.length === 0) return undefined;
    const level = new Map<string, MutableBranch>();
    for (const d of descriptors) {
      const part = d.value ? `${escapePart(d.key)}=${escapePart(d.value)}` : escapePart(d.key);
      const idPath = parentId ? `${parentId}/${part}` : part;
      const rule = this.rule(d, idPath);
      const node: MatchNode = {
        rule,
        children: this.level(d.children, idPath),
        shardKey: d.shardKey,
        sharedValue: d.shareThreshold ? d.value : undefined,
        fairShare: rule?.fairShare,
      };
      let branch = level.get(d.key);
      if (!branch) {
        branch = { exact: new Map(), wildcards: [], any: undefined };
        level.set(d.key, branch);
      }
      if (d.value === "") branch.any = node;
      else {
        branch.exact.set(d.value, node);
        if (d.value.endsWith("*")) branch.wildcards.push({ prefix: d.value.slice(0, -1), node });
      }
    }
    return level as Map<string, KeyBranch>;
  }

  private rule(d: DescriptorSpec, idPath: string): LimitRule | undefined {
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
      replaces: Object.freeze(draft.replaces.map((r) => r.name)),
      source: Object.freeze({ file: this.spec.file, path: d.path }),
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
