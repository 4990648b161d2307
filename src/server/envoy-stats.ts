import type client from "prom-client";
import type { LimitRule } from "../config/types.js";
import type { Decision } from "../core/decision.js";
import { mapCounter } from "./metrics.js";

/**
 * envoyproxy/ratelimit's per-limit statistics (`ratelimit.service.rate_limit.<key>.<stat>`) as
 * one Prometheus counter, `shardlimit_envoy_descriptor_hits_total{key, stat}`, in hits (each
 * descriptor's `hits_addend`). `key` is the limit's metric name (LimitConfig.metricKey: the config
 * path, or the request's values under `detailed_metric`/`value_to_metric`), so the number of keys
 * is bounded: past `maxKeys` distinct keys the rest share the key `(other)`.
 */

export const DESCRIPTOR_STATS = [
  "total_hits",
  "over_limit",
  "near_limit",
  "within_limit",
  "shadow_mode",
] as const;
export type DescriptorStat = (typeof DESCRIPTOR_STATS)[number];

export const DEFAULT_DESCRIPTOR_METRIC_KEYS = 1000;

export class DescriptorMetrics {
  private readonly values = new Map<string, number>();
  /** Per key counted: its map keys, one per stat (`key\0stat`), made once. */
  private readonly keys = new Map<string, Record<DescriptorStat, string>>();
  private readonly other = statKeys("(other)");

  constructor(
    registry: client.Registry,
    private readonly maxKeys: number,
    private readonly nearLimitRatio: number,
  ) {
    mapCounter(
      registry,
      "shardlimit_envoy_descriptor_hits_total",
      "ShouldRateLimit hits per limit, as envoyproxy/ratelimit's per-limit stats (key: its metric name)",
      ["key", "stat"],
      this.values,
    );
  }

  /** Counts one descriptor's decision of `hits` on `rule`, as envoyproxy/ratelimit's limiter does. */
  record(metricKey: string, rule: LimitRule, d: Decision, hits: number): void {
    let k = this.keys.get(metricKey);
    if (k === undefined) {
      if (this.keys.size < this.maxKeys) {
        k = statKeys(metricKey);
        this.keys.set(metricKey, k);
      } else k = this.other;
    }
    this.add(k.total_hits, hits);
    if (!d.allowed || d.shadowed) {
      this.add(k.over_limit, hits);
      if (d.shadowed) this.add(k.shadow_mode, hits);
      return;
    }
    this.add(k.within_limit, hits);
    // Hits that took the count past the near-limit threshold (floor(limit * ratio)).
    const near = Math.floor(rule.limit * this.nearLimitRatio);
    const after = rule.limit - d.remaining;
    if (after > near) this.add(k.near_limit, Math.min(hits, after - near));
  }

  private add(k: string, n: number): void {
    if (n <= 0) return;
    this.values.set(k, (this.values.get(k) ?? 0) + n);
  }
}

function statKeys(key: string): Record<DescriptorStat, string> {
  return Object.fromEntries(DESCRIPTOR_STATS.map((s) => [s, `${key}\u0000${s}`])) as Record<
    DescriptorStat,
    string
  >;
}
