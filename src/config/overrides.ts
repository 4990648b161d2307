import { createHash } from "node:crypto";
import { z } from "zod";
import { decodeKey, encodeKey } from "./key.js";
import type { ConfigSource, DescriptorEntry, LimitConfig, LimitRule, Resolved, Unit } from "./types.js";
import { UNIT_SECONDS } from "./types.js";

/**
 * Runtime overrides (`shardlimit limits set`): a per-descriptor limit that replaces, for exactly
 * one descriptor path, what the config says. They travel with the config as one more source, named
 * OVERRIDES_SOURCE, holding JSON, so a gateway that fetches a server's limits (`GetLimits`) gets
 * them too and compiles the same thing, and the config's version changes when they change.
 *
 * Matching: an override applies to a request whose descriptor (priority entry aside) is exactly
 * the override's entries, in order. When the config resolves that descriptor, the matched rule is
 * kept (its counter, shard key, fair-share parent, algorithm, flags) with the override's limit and
 * window; when it does not, the override is a limit of its own (fixed window, counted under the
 * descriptor itself). Overrides for a domain the config does not have are ignored: the service
 * answers such a domain as unknown.
 */

export const OVERRIDES_SOURCE = "shardlimit:overrides";

const UNITS = Object.keys(UNIT_SECONDS) as [Unit, ...Unit[]];

export const LimitOverrideSchema = z.object({
  /** The canonical key `domain/k1=v1/k2=v2` of the descriptor it applies to. */
  key: z.string().min(3).max(4096),
  requestsPerUnit: z.number().int().nonnegative().max(0xffff_ffff),
  unit: z.enum(UNITS),
  /** Wall-clock ms after which it no longer applies; forever when absent. */
  expiresAt: z.number().int().positive().optional(),
});
export type LimitOverride = z.infer<typeof LimitOverrideSchema>;

/** The source carrying `overrides` (sorted by key, so equal sets give equal versions). */
export function overridesSource(overrides: readonly LimitOverride[]): ConfigSource {
  const sorted = [...overrides].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { file: OVERRIDES_SOURCE, text: JSON.stringify(sorted) };
}

/** Parses an overrides source; a string names what is wrong. */
export function parseOverrides(text: string): LimitOverride[] | string {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return `overrides are not JSON: ${(err as Error).message}`;
  }
  const r = z.array(LimitOverrideSchema).safeParse(json);
  if (!r.success) return `overrides are malformed: ${r.error.issues[0]?.message ?? "invalid"}`;
  for (const o of r.data) {
    const d = decodeKey(o.key);
    if (typeof d === "string") return `override ${JSON.stringify(o.key)}: ${d}`;
  }
  return r.data;
}

/** `base` with the overrides of `source` (an `overridesSource`) applied; throws if it is malformed. */
export function withOverrides(base: LimitConfig, source: ConfigSource): LimitConfig {
  const parsed = parseOverrides(source.text);
  if (typeof parsed === "string") throw new Error(parsed);
  return new OverriddenConfig(base, parsed, source);
}

class OverriddenConfig implements LimitConfig {
  readonly domains: readonly string[];
  readonly rules: readonly LimitRule[];
  readonly files: readonly string[];
  readonly sources: readonly ConfigSource[];
  readonly version: string;
  private readonly byKey = new Map<string, { o: LimitOverride; entries: readonly DescriptorEntry[] }>();
  private readonly overridden = new Set<string>();

  constructor(
    private readonly base: LimitConfig,
    overrides: readonly LimitOverride[],
    source: ConfigSource,
  ) {
    this.domains = base.domains;
    this.rules = base.rules;
    this.files = base.files;
    this.sources = Object.freeze([...base.sources, source]);
    this.version = createHash("sha256").update(`${base.version}\0${source.text}`).digest("hex").slice(0, 16);
    for (const o of overrides) {
      const d = decodeKey(o.key) as { domain: string; entries: DescriptorEntry[] };
      if (!base.domains.includes(d.domain)) continue;
      // Re-encoded, so a key written with needless escapes still matches the request's.
      this.byKey.set(encodeKey(d.domain, d.entries), { o, entries: d.entries });
      this.overridden.add(d.domain);
    }
  }

  resolve(domain: string, entries: readonly DescriptorEntry[]): Resolved | undefined {
    const base = this.base.resolve(domain, entries);
    if (!this.overridden.has(domain)) return base;
    const key = encodeKey(domain, entries);
    const hit = this.byKey.get(key);
    if (hit === undefined) return base;
    if (base !== undefined) return { ...base, rule: overrideRule(hit.o, key, base.rule) };
    return { rule: overrideRule(hit.o, key, undefined, domain), counterKey: key, shardKey: key };
  }

  ruleById(id: string): LimitRule | undefined {
    return this.base.ruleById(id);
  }
}

function overrideRule(o: LimitOverride, key: string, rule: LimitRule | undefined, domain = ""): LimitRule {
  const limit = {
    limit: o.requestsPerUnit,
    burst: o.requestsPerUnit,
    unit: o.unit,
    windowMs: UNIT_SECONDS[o.unit] * 1000,
    unlimited: false,
    source: { file: OVERRIDES_SOURCE, path: key },
  };
  if (rule !== undefined) {
    return { ...rule, ...limit, algorithm: rule.unlimited ? "fixed_window" : rule.algorithm };
  }
  return {
    id: `override:${key}`,
    domain,
    algorithm: "fixed_window",
    costUnit: "requests",
    shadowMode: false,
    replaces: [],
    leaseTimeoutMs: 30_000,
    localAllowance: 1,
    failMode: "open",
    soft: false,
    ...limit,
  };
}

/** Overrides still in force at wall-clock `now`. */
export function liveOverrides(overrides: readonly LimitOverride[], now: number): LimitOverride[] {
  return overrides.filter((o) => o.expiresAt === undefined || o.expiresAt > now);
}
