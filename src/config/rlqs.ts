import { readFileSync } from "node:fs";
import { isMap, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import { z } from "zod";
import type { Clock } from "../core/clock.js";
import { parseDuration } from "./duration.js";
import { ConfigError, type ConfigProblem } from "./errors.js";
import type { DescriptorEntry } from "./types.js";
import { WatchedFile } from "./watched-file.js";

/**
 * The `rlqs:` section (its own file, `serve --rlqs-config`): how Envoy's Rate Limit Quota Service
 * buckets map onto the limits. A bucket id is a map of strings (`{name: api, tenant: acme}`); the
 * first mapping whose `domain` is the stream's and whose `match` entries the bucket id has maps it
 * to a descriptor of `limit_domain` (default: the stream's domain) with `descriptors` entries in
 * order, each a fixed `value` or the bucket id's entry named by `bucket_key`.
 *
 *   rlqs:
 *     mappings:
 *       - domain: envoy
 *         match: { name: api }
 *         limit_domain: api
 *         descriptors:
 *           - { key: tenant, bucket_key: tenant }
 *           - { key: route, value: /v1 }
 *     unmatched: allow_all          # or deny_all: buckets no mapping (or no limit) takes
 *     report_interval: 100ms        # how often each stream reports to the keys' owners
 *     max_buckets_per_stream: 1000
 *     max_streams: 1000
 *     abandon_after: 1m             # a bucket unreported this long is abandoned
 */

export interface RlqsEntrySource {
  readonly key: string;
  /** A fixed value, or the bucket id's entry named `bucketKey`. */
  readonly value?: string;
  readonly bucketKey?: string;
}

export interface RlqsMapping {
  readonly domain: string;
  readonly match: Readonly<Record<string, string>>;
  readonly limitDomain: string;
  readonly descriptors: readonly RlqsEntrySource[];
}

export interface RlqsConfig {
  readonly mappings: readonly RlqsMapping[];
  readonly unmatched: "allow_all" | "deny_all";
  readonly reportIntervalMs: number;
  readonly maxBucketsPerStream: number;
  readonly maxStreams: number;
  readonly abandonAfterMs: number;
}

const text = z.string().min(1, "must not be empty");
const duration = (min: number, max: number, range: string) =>
  z.string().transform((s, ctx) => {
    const ms = parseDuration(s);
    if (ms === undefined || ms < min || ms > max) {
      ctx.addIssue({ code: "custom", message: `must be a duration from ${range}, got ${JSON.stringify(s)}` });
      return z.NEVER;
    }
    return ms;
  });
const count = (max: number) => z.number().int().min(1).max(max);

const entry = z
  .strictObject({ key: text, value: text.optional(), bucket_key: text.optional() })
  .refine((e) => (e.value === undefined) !== (e.bucket_key === undefined), {
    message: "give exactly one of value and bucket_key",
  });

const mapping = z.strictObject({
  domain: text,
  match: z.record(text, text).optional(),
  limit_domain: text.optional(),
  descriptors: z.array(entry).min(1, "must list at least one entry"),
});

const schema = z.strictObject({
  rlqs: z.strictObject({
    mappings: z.array(mapping).min(1, "must list at least one mapping"),
    unmatched: z.enum(["allow_all", "deny_all"]).optional(),
    report_interval: duration(10, 60_000, "10ms to 1m (e.g. 100ms)").optional(),
    abandon_after: duration(1000, 86_400_000, "1s to 1d (e.g. 1m)").optional(),
    max_buckets_per_stream: count(100_000).optional(),
    max_streams: count(100_000).optional(),
  }),
});

/** Parses the `rlqs:` file; ConfigError names the file, the field and its line. */
export function parseRlqsConfig(file: string, source: string): RlqsConfig {
  const lines = new LineCounter();
  const doc = parseDocument(source, { lineCounter: lines, prettyErrors: false });
  const problems: ConfigProblem[] = doc.errors.map((e) => ({
    file,
    path: "",
    line: lines.linePos(e.pos[0]).line,
    message: `invalid YAML: ${e.message}`,
  }));
  if (problems.length > 0) throw new ConfigError(problems);
  const parsed = schema.safeParse(doc.toJS());
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const at = i.path.filter((p) => typeof p !== "symbol") as (string | number)[];
        const node = lineOf(doc.getIn(at, true) as Node | undefined, lines);
        return { file, path: pathText(at), line: node, message: i.message };
      }),
    );
  }
  const r = parsed.data.rlqs;
  return {
    mappings: r.mappings.map((m) => ({
      domain: m.domain,
      match: m.match ?? {},
      limitDomain: m.limit_domain ?? m.domain,
      descriptors: m.descriptors.map((d) => ({ key: d.key, value: d.value, bucketKey: d.bucket_key })),
    })),
    unmatched: r.unmatched ?? "allow_all",
    reportIntervalMs: r.report_interval ?? 100,
    maxBucketsPerStream: r.max_buckets_per_stream ?? 1000,
    maxStreams: r.max_streams ?? 1000,
    abandonAfterMs: r.abandon_after ?? 60_000,
  };
}

export function loadRlqsConfig(file: string): RlqsConfig {
  return parseRlqsConfig(file, readRlqsFile(file));
}

function lineOf(node: Node | undefined, lines: LineCounter): number | undefined {
  const at = node && (isMap(node) || isSeq(node) || "range" in node) ? node.range?.[0] : undefined;
  return at === undefined ? undefined : lines.linePos(at).line;
}

function pathText(at: readonly (string | number)[]): string {
  return at.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/**
 * The descriptor a bucket id maps to, or undefined when no mapping takes it (its domain, a `match`
 * entry or a `bucket_key` entry missing).
 */
export function bucketDescriptor(
  config: RlqsConfig,
  domain: string,
  bucket: Readonly<Record<string, string>>,
): { domain: string; entries: DescriptorEntry[] } | undefined {
  next: for (const m of config.mappings) {
    if (m.domain !== domain) continue;
    for (const [k, v] of Object.entries(m.match)) if (bucket[k] !== v) continue next;
    const entries: DescriptorEntry[] = [];
    for (const d of m.descriptors) {
      const value = d.value ?? (Object.hasOwn(bucket, d.bucketKey!) ? bucket[d.bucketKey!] : undefined);
      if (value === undefined) continue next;
      entries.push({ key: d.key, value });
    }
    return { domain: m.limitDomain, entries };
  }
  return undefined;
}

/**
 * The `--rlqs-config` file in force, reloaded when it changes and on SIGHUP (watched-file.ts):
 * validated whole, a bad file reported and the old mapping kept.
 */
export function rlqsConfigWatcher(opts: {
  path: string;
  clock: Clock;
  onSwap: (config: RlqsConfig) => void;
  onError: (err: Error) => void;
}): WatchedFile<RlqsConfig> {
  return new WatchedFile({
    ...opts,
    parse: parseRlqsConfig,
    unreadable: (err) => unreadable(opts.path, err),
  });
}

function readRlqsFile(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw unreadable(file, err as Error);
  }
}

function unreadable(file: string, err: Error): ConfigError {
  return new ConfigError([{ file, path: "", message: `cannot read: ${err.message}` }]);
}
