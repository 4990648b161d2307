/**
 * The validated, immutable shape of the limit configuration. The loader turns YAML in
 * envoyproxy/ratelimit's format (plus our extensions) into this; everything downstream reads
 * only this, so a config that failed validation can never be half-applied.
 */

import type { Algorithm } from "../core/algorithms/names.js";

export { ALGORITHMS, type Algorithm } from "../core/algorithms/names.js";
export type { FairShareSpec } from "../core/limit.js";
export { DEFAULT_PRIORITY, PRIORITIES, type Priority, type Reserve } from "../core/priority.js";

import type { FairShareSpec } from "../core/limit.js";
import type { PoolSettings } from "../core/pool.js";
import type { Reserve } from "../core/priority.js";

export type { PoolSettings } from "../core/pool.js";

/** envoyproxy/ratelimit's units, plus what `duration_until_reset` and window length derive from. */
export type Unit = "second" | "minute" | "hour" | "day" | "week" | "month" | "year";

/** Seconds per unit, as envoyproxy/ratelimit divides time into windows. */
export const UNIT_SECONDS: Readonly<Record<Unit, number>> = {
  second: 1,
  minute: 60,
  hour: 3600,
  day: 86_400,
  week: 604_800,
  month: 2_592_000,
  year: 31_536_000,
};

/** Envoy's `RateLimitResponse.RateLimit.Unit` enum values. */
export const UNIT_PROTO: Readonly<Record<Unit, number>> = {
  second: 1,
  minute: 2,
  hour: 3,
  day: 4,
  month: 5,
  year: 6,
  week: 7,
};

export type FailMode = "open" | "closed";

/** One limit, as attached to a descriptor node. */
export interface LimitRule {
  /** Stable identity: `domain` + descriptor path (+ name). Used in metrics and as counter namespace. */
  readonly id: string;
  readonly name?: string;
  readonly domain: string;
  readonly algorithm: Algorithm;
  /** Units admitted per window (for `concurrency`: the most held at once). */
  readonly limit: number;
  /** Window length in milliseconds (token bucket: the time to refill `limit` units). */
  readonly windowMs: number;
  /** Token bucket capacity above zero, in units. Defaults to `limit`. Ignored by other algorithms. */
  readonly burst: number;
  /** The envoy unit the limit was written in (reported back in `current_limit`). */
  readonly unit: Unit;
  /** What one unit of cost means (`requests`, `tokens`, `inference_units`...): informational. */
  readonly costUnit: string;
  readonly unlimited: boolean;
  /** Count and report, but never reject. */
  readonly shadowMode: boolean;
  /**
   * envoyproxy/ratelimit's `quota_mode`: over the limit, the descriptor answers OVER_LIMIT but the
   * request stays OK unless every quota-mode descriptor of it is over (server.ts respondEnvoy).
   */
  readonly quotaMode?: boolean;
  /** envoyproxy/ratelimit's `metadata`: returned in the response's dynamic metadata when it passes. */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** envoyproxy/ratelimit's `detailed_metric`: its metrics are keyed by the request's values. */
  readonly detailedMetric?: boolean;
  /** Names of rules this one replaces when both apply to one request. */
  readonly replaces: readonly string[];
  /** Concurrency only: a held slot is released after this long without a release. */
  readonly leaseTimeoutMs: number;
  /** Batched mode: units a gateway may admit for a key it has no policy for yet (0 = strict). */
  readonly localAllowance: number;
  /** Batched mode: what a gateway does when the key's owner is unreachable. */
  readonly failMode: FailMode;
  /** Where the rule came from, for error messages and `status`. */
  readonly source: { readonly file: string; readonly path: string };
  /** `fair_share`: divided among the values of the child key `by` when contended. */
  readonly fairShare?: FairShareSpec;
  /** `reserve`: fractions of the limit that lower classes may never take. */
  readonly reserve?: Reserve;
  /** `soft: true`: may be exceeded while the fair-share limit above has idle capacity. */
  readonly soft: boolean;
  /**
   * `global: true`: held across regional clusters; a region's owner divides the share the global
   * tier gives its region (`serve --global-tier`). Absent means false.
   */
  readonly global?: boolean;
  /**
   * `resource`: the limit is a quota of a resource measured after serving (CPU-seconds,
   * GPU-seconds, tokens); gateways charge a predicted cost and settle the measured one.
   */
  readonly resource?: ResourceSpec;
  /**
   * `pool`: the pool of backends this limit is attached to (issue 14). Its overload sheds and its
   * idle capacity lends on top of the quota; every limit of a pool is placed by the pool's shard key.
   */
  readonly pool?: PoolSettings;
}

/** A resource quota's unit and how a gateway predicts a request's cost before it is served. */
export interface ResourceSpec {
  /** What the quota measures (`cpu_seconds`, `gpu_seconds`, `tokens`); also the rule's `costUnit`. */
  readonly name: string;
  /** The predicted cost of a request before any request of the key was settled. */
  readonly prior: number;
  /** The weight of each settled cost in the moving average that predicts the next one, (0, 1]. */
  readonly smoothing: number;
}

/** The shard key of every limit attached to pool `name`, and the key its utilisation is reported under. */
export function poolShardKey(name: string): string {
  return `pool/${name}`;
}

/** A request's descriptor: ordered (key, value) entries, as Envoy sends them. */
export interface DescriptorEntry {
  readonly key: string;
  readonly value: string;
}

/** What a descriptor resolved to. */
export interface Resolved {
  readonly rule: LimitRule;
  /** The counter's key: domain and every matched entry, values included. */
  readonly counterKey: string;
  /** The key that places the counter on an owner; equal for limits that must be decided together. */
  readonly shardKey: string;
  /**
   * Under a `fair_share` limit: the value of its `by` key this charge is attributed to (a tenant),
   * with its weight. Set on the fair-share limit's own charge (`parent`, or the resolution itself
   * when the node the request reaches has no rule of its own).
   */
  readonly subject?: { readonly id: string; readonly weight: number };
  /**
   * The fair-share limit above the matched rule (a group's), charged with the same request and
   * decided together with it by the same owner (same shard key).
   */
  readonly parent?: Resolved;
  /**
   * The class rank (`PRIORITY_RANK`) a canonical key's `priority` entry named (`resolveKey`); absent
   * for `normal` and for descriptors resolved with `resolve`, whose callers split it off.
   */
  readonly rank?: number;
}

/** A loaded, validated configuration. Immutable; replaced whole on reload. */
export interface LimitConfig {
  readonly domains: readonly string[];
  readonly rules: readonly LimitRule[];
  /** Most specific match wins, per envoyproxy/ratelimit. `undefined`: no limit applies. */
  resolve(domain: string, entries: readonly DescriptorEntry[]): Resolved | undefined;
  /** Rule by id, for batched reports that name a rule directly. */
  ruleById(id: string): LimitRule | undefined;
  /**
   * The name envoyproxy/ratelimit gives the stats of the limit `entries` reach
   * (`domain.key_value.key2`, with request values where `detailed_metric`/`value_to_metric` ask).
   */
  metricKey?(domain: string, entries: readonly DescriptorEntry[]): string | undefined;
  /** Files the config was read from, for reload watching and messages. */
  readonly files: readonly string[];
  /** The YAML it was compiled from, which servers hand to gateway clients (`GetLimits`). */
  readonly sources: readonly ConfigSource[];
  /** A digest of `sources`: equal versions are the same configuration. */
  readonly version: string;
  /** Compiled with domains merged across files (`--merge-domains`): gateways compile it so too. */
  readonly mergeDomains?: boolean;
  /** The pools of backends defined across all documents (issue 14), each name once. */
  readonly pools?: readonly PoolSettings[];
}

/** One configuration file's text, as read. */
export interface ConfigSource {
  /** As it appears in messages: the given path, or the directory joined with the file name. */
  readonly file: string;
  readonly text: string;
}
