import { formatDuration } from "./duration.js";
import { ConfigError, type ConfigProblem } from "./errors.js";
import { type CompileOptions, loadConfig } from "./load.js";
import { type LimitConfig, type LimitRule, PRIORITIES } from "./types.js";

/** What `shardlimit check-config PATH` runs: validate, and say what was loaded or what to fix. */

export type CheckResult =
  | { readonly ok: true; readonly config: LimitConfig; readonly summary: string }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

export function checkConfig(path: string, options: CompileOptions = {}): CheckResult {
  try {
    const config = loadConfig(path, options);
    return { ok: true, config, summary: formatSummary(config) };
  } catch (err) {
    if (err instanceof ConfigError) return { ok: false, problems: err.problems };
    return { ok: false, problems: [{ file: path, path: "", message: (err as Error).message }] };
  }
}

/**
 * One line for the totals, one per domain with its rule count, then one per rule, e.g.
 *   api: 4 rules
 *     api/tenant  token_bucket 100 requests per 1s (burst 200)
 *     api/group  sliding_window 6000 requests per 1m, fair share by tenant (2 weights), reserve critical 20%
 *     api/group/tenant  sliding_window 2000 requests per 1m [soft]
 */
export function formatSummary(config: LimitConfig): string {
  const files = config.files.length === 1 ? "1 file" : `${config.files.length} files`;
  const lines = [
    `${plural(config.domains.length, "domain")}, ${plural(config.rules.length, "rule")} from ${files}`,
  ];
  for (const domain of config.domains) {
    const rules = config.rules.filter((r) => r.domain === domain);
    lines.push(`  ${domain}: ${plural(rules.length, "rule")}`);
    for (const r of rules) lines.push(`    ${r.id}  ${describeRule(r)}`);
  }
  for (const p of config.pools ?? []) {
    lines.push(`  pool ${p.name}: target ${p.target}, idle below ${p.idleBelow}`);
  }
  return lines.join("\n");
}

export function describeRule(r: LimitRule): string {
  const flags = `${r.shadowMode ? " [shadow]" : ""}${r.quotaMode ? " [quota]" : ""}${r.soft ? " [soft]" : ""}${r.global ? " [global]" : ""}${r.pool ? ` [pool ${r.pool.name}]` : ""}`;
  if (r.unlimited) return `unlimited${flags}`;
  if (r.algorithm === "concurrency") {
    return `concurrency ${r.limit} ${r.costUnit} held at once (lease ${formatDuration(r.leaseTimeoutMs)})${flags}`;
  }
  const burst = r.algorithm === "token_bucket" && r.burst !== r.limit ? ` (burst ${r.burst})` : "";
  const measured = r.resource ? `, measured after serving (prior ${r.resource.prior})` : "";
  return `${r.algorithm} ${r.limit} ${r.costUnit} per ${formatDuration(r.windowMs)}${burst}${measured}${sharing(r)}${flags}`;
}

/** `fair_share` and `reserve`, which only rate limits have (parse-sharing.ts refuses the rest). */
function sharing(r: LimitRule): string {
  let out = "";
  if (r.fairShare) {
    const n = r.fairShare.weights.size;
    out += `, fair share by ${r.fairShare.by}${n > 0 ? ` (${plural(n, "weight")})` : ""}`;
  }
  const reserve = r.reserve;
  if (reserve) {
    // Highest class first, as an operator reads a reserve; percentages rounded past float noise.
    const parts = [...PRIORITIES].reverse().flatMap((p) => {
      const v = reserve[p];
      return v === undefined ? [] : [`${p} ${Number((v * 100).toFixed(4))}%`];
    });
    out += `, reserve ${parts.join(" ")}`;
  }
  return out;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
