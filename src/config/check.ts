import { formatDuration } from "./duration.js";
import { ConfigError, type ConfigProblem } from "./errors.js";
import { loadConfig } from "./load.js";
import type { LimitConfig, LimitRule } from "./types.js";

/** What `shardlimit check-config PATH` runs: validate, and say what was loaded or what to fix. */

export type CheckResult =
  | { readonly ok: true; readonly config: LimitConfig; readonly summary: string }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

export function checkConfig(path: string): CheckResult {
  try {
    const config = loadConfig(path);
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
  return lines.join("\n");
}

export function describeRule(r: LimitRule): string {
  const flags = r.shadowMode ? " [shadow]" : "";
  if (r.unlimited) return `unlimited${flags}`;
  if (r.algorithm === "concurrency") {
    return `concurrency ${r.limit} ${r.costUnit} held at once (lease ${formatDuration(r.leaseTimeoutMs)})${flags}`;
  }
  const burst = r.algorithm === "token_bucket" && r.burst !== r.limit ? ` (burst ${r.burst})` : "";
  return `${r.algorithm} ${r.limit} ${r.costUnit} per ${formatDuration(r.windowMs)}${burst}${flags}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
