import client from "prom-client";
import { GatewayLimiter } from "../client/gateway-limiter.js";
import type { ClientTransport, LimiterLogger } from "../client/transport.js";
import type { LimitRule } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { InvalidArgumentError } from "../core/errors.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import type { GlobalShares } from "../server/global-shares.js";

/**
 * Where a region's share of a global limit comes from: the global tier's latest answer
 * (`connected`), the share it last had while cut off (`last_share`), or, cut off for longer than
 * `fallbackAfterMs` (or never answered yet), the limit divided equally among the regions
 * (`fallback`).
 */
export type GlobalMode = "connected" | "last_share" | "fallback";
export const GLOBAL_MODES: readonly GlobalMode[] = ["connected", "last_share", "fallback"];

export interface GlobalTierOptions {
  /** This region's name: its client id at the global tier, where the region is one gateway. */
  region: string;
  /** Servers of the global tier (host:port); any one of them will do. */
  servers: readonly string[];
  transport: ClientTransport;
  clock: Clock;
  /** How often the region's counts go to the global tier (default 100 ms). */
  reportIntervalMs?: number;
  /** Cut off this long, a region keeps to limit / regions instead of its last share (default 30 s). */
  fallbackAfterMs?: number;
  /**
   * Regions sharing a global limit, for that fallback before the global tier has said how many
   * report the key (it says with every answer); default 1.
   */
  regions?: number;
  /** Part of the client id on the wire (`GatewayLimiterOptions.instanceId`); simulations fix it. */
  instanceId?: string;
  random?: () => number;
  logger?: LimiterLogger;
}

/** The state of one global counter key in this region. */
interface KeyShare {
  /** Units per ms this region divides now. */
  rate: number;
  /** The mean of the shares answered in the last second: what the region divides, and keeps to cut off. */
  last: number;
  /** Those answers: when each came, and its share (units per ms), oldest first. */
  answers: { at: number; rate: number }[];
  /** When the global tier last answered for this key (-Infinity: never). */
  contact: number;
  /** When this region first reported the key. */
  born: number;
  /** Regions reporting the key, as the global tier last said. */
  regions: number;
  mode: GlobalMode;
  /** The rule with `rate` as its limit, made again only when the rate or the rule changes. */
  rule: LimitRule | undefined;
  configured: LimitRule | undefined;
}

export const DEFAULT_FALLBACK_AFTER_MS = 30_000;

/**
 * How long a report to the global tier may take before it counts as failed: a second, or five
 * report intervals. A gateway's default (two intervals, 200 ms) is one round trip between regions
 * (50 ms each way) plus a busy server: over loopback at a load average of 12-18 every region's
 * reports failed about once a second, and each failure held the counts back (re-sent unchanged,
 * then the rest at once), so the global owner saw a region's demand swing from 0 to 20 times its
 * rate and divided the limit by those swings (region B, asking 400/s, got 300-350 of 1000 while A
 * got 450-480). Silence is judged by the answers (five intervals), not by this timeout.
 */
export function globalReportTimeoutMs(intervalMs: number): number {
  return Math.max(1000, 5 * intervalMs);
}

/**
 * The global tier link's gRPC channels: reconnect at least once a second. With grpc-js's default
 * backoff (1 s growing 1.6x to 120 s) a region whose link came back after a 10 s cut stayed on its
 * last share 5-10 s longer, waiting for the next attempt (bench overload --only global); an
 * attempt a second costs nothing on a link with one or two channels per member.
 */
export const GLOBAL_TIER_CHANNEL_OPTIONS = {
  "grpc.initial_reconnect_backoff_ms": 250,
  "grpc.max_reconnect_backoff_ms": 1000,
} as const;
export const DEFAULT_GLOBAL_REPORT_INTERVAL_MS = 100;

/** A region's share is the mean of the shares answered over this long. */
const SHARE_WINDOW_MS = 1000;
/** Global keys tracked at most; past it the least recently used is forgotten. */
const MAX_KEYS = 10_000;

/**
 * The owner of a global key in a region as a gateway of the global tier (seed 003: aggregators
 * below a global controller). It reports the region's demand and usage, what the region's own
 * gateways reported for the key, with the same GatewayLimiter and batched reports every gateway
 * uses; the global owner's policy for this region's "gateway" is the region's share, which the
 * region's owner divides among its gateways in place of the configured limit.
 *
 * The share is the policy's `share` (the global owner's max-min part of the limit's rate for
 * this region), averaged over a second; from an owner that sends none, a GRANT or
 * REJECT_FRACTION's units over one report interval, ALLOW the whole limit, REJECT_UNTIL nothing.
 * Without an answer for five report intervals (one lost report is not an outage) the region keeps
 * to its last share, the shares of its last second averaged; after `fallbackAfterMs` to the limit
 * divided by the regions. While cut off, the region's usage is not queued for the global tier
 * (only its demand, as refused): it spent the share it was given, and reported late it would land
 * as a debt on every region at once.
 */
export class GlobalTier implements GlobalShares {
  private readonly gateway: GatewayLimiter;
  private readonly keys = new Map<string, KeyShare>();
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly contactMs: number;
  private readonly fallbackAfterMs: number;
  private readonly regions: number;
  private readonly since: number;
  private readonly logger: LimiterLogger;
  private readonly region: string;
  /** Global keys the global tier has no limit for, warned about once. */
  private readonly unknown = new Set<string>();

  constructor(opts: GlobalTierOptions) {
    if (opts.region === "") throw new InvalidArgumentError("region is empty: name this region (--region)");
    const fallbackAfterMs = opts.fallbackAfterMs ?? DEFAULT_FALLBACK_AFTER_MS;
    if (!(Number.isFinite(fallbackAfterMs) && fallbackAfterMs >= 0)) {
      throw new InvalidArgumentError(`fallbackAfterMs must be a duration >= 0, got ${fallbackAfterMs}`);
    }
    const regions = opts.regions ?? 1;
    if (!(Number.isSafeInteger(regions) && regions >= 1)) {
      throw new InvalidArgumentError(`regions must be a positive integer, got ${regions}`);
    }
    this.clock = opts.clock;
    this.intervalMs = opts.reportIntervalMs ?? DEFAULT_GLOBAL_REPORT_INTERVAL_MS;
    this.contactMs = 5 * this.intervalMs;
    this.fallbackAfterMs = fallbackAfterMs;
    this.regions = regions;
    this.since = opts.clock.now();
    this.logger = opts.logger ?? { warn() {}, info() {} };
    this.region = opts.region;
    this.gateway = new GatewayLimiter({
      servers: opts.servers,
      clientId: opts.region,
      transport: opts.transport,
      clock: opts.clock,
      reportIntervalMs: this.intervalMs,
      reportTimeoutMs: globalReportTimeoutMs(this.intervalMs),
      ...(opts.instanceId !== undefined ? { instanceId: opts.instanceId } : {}),
      ...(opts.random !== undefined ? { random: opts.random } : {}),
      ...(opts.logger !== undefined ? { logger: opts.logger } : {}),
    });
  }

  /** Starts fetching the global tier's limits and reporting. */
  start(): void {
    this.gateway.start();
  }

  close(): void {
    this.gateway.close();
  }

  /** Whether the global tier has handed out its limits and assignment. */
  get ready(): boolean {
    return this.gateway.ready;
  }

  reported(key: string, _rule: LimitRule, admitted: number, rejected: number): void {
    const k = this.keys.get(key);
    const now = this.clock.now();
    // Cut off (or never answered since the key was first reported): the usage stays here (see
    // the class comment), the demand does not: all of it is reported as refused, so the first
    // report that gets through (its span reaches back to the last one built) shows the region's
    // demand, and its share is not cut for a region that seemed idle.
    const cut = k !== undefined && now - (Number.isFinite(k.contact) ? k.contact : k.born) > this.contactMs;
    const known = this.gateway.account(key, cut ? 0 : admitted, cut ? admitted + rejected : rejected);
    if (!known && this.gateway.ready && !this.unknown.has(key) && this.unknown.size < 1000) {
      // Its limits are known there and none applies: the global tier's config lacks this rule.
      this.unknown.add(key);
      this.logger.warn(
        { key, region: this.region },
        "the global tier has no limit for this global key (is the rule in its config?): this region keeps to limit / regions",
      );
    }
  }

  ruleFor(key: string, rule: LimitRule, now: number): LimitRule {
    const k = this.share(key, rule, now);
    if (k.rule === undefined || k.configured !== rule || k.rule.limit !== k.rate * rule.windowMs) {
      const full = rule.limit / rule.windowMs;
      // Never quite 0: the algorithms divide by the limit. A millionth of it admits nothing in practice.
      const rate = Math.max(k.rate, full * 1e-6);
      // Not global any more: this region's gateways are not regions.
      k.rule = { ...rule, limit: rate * rule.windowMs, burst: (rule.burst * rate) / full, global: false };
      k.configured = rule;
    }
    return k.rule;
  }

  /** The region's share of `key` now (units per second), its mode and its last contact; for metrics and status. */
  status(): {
    key: string;
    sharePerS: number;
    /** What the region would keep to if cut off now: the shares of the last second, averaged. */
    lastSharePerS: number;
    mode: GlobalMode;
    lastContactAgoMs: number;
  }[] {
    const now = this.clock.now();
    return [...this.keys].map(([key, k]) => ({
      key,
      sharePerS: k.rate * 1000,
      lastSharePerS: k.last * 1000,
      // The mode by the clock (the share is the one last divided, at the last report).
      mode: this.modeAt(k, now),
      lastContactAgoMs: now - (Number.isFinite(k.contact) ? k.contact : this.since),
    }));
  }

  /** Updates `key`'s share from the global tier's latest answer, or from how long it has been silent. */
  private share(key: string, rule: LimitRule, now: number): KeyShare {
    let k = this.keys.get(key);
    if (k === undefined) {
      if (this.keys.size >= MAX_KEYS) this.keys.delete(this.keys.keys().next().value!);
      k = {
        rate: 0,
        last: 0,
        answers: [],
        contact: Number.NEGATIVE_INFINITY,
        born: now,
        regions: this.regions,
        mode: "fallback",
        rule: undefined,
        configured: undefined,
      };
    } else this.keys.delete(key);
    this.keys.set(key, k); // most recently used last
    const full = rule.limit / rule.windowMs;
    const answer = this.gateway.lastPolicy(key);
    if (answer !== undefined && answer.at > k.contact) {
      const rate = Math.min(full, rateOf(answer.policy, full, this.intervalMs));
      // A mean over a window rather than an exponential average: a start-up share (one region
      // known yet, the whole limit its share) is gone a second later instead of fading for seconds.
      k.answers.push({ at: answer.at, rate });
      while (k.answers[0]!.at <= answer.at - SHARE_WINDOW_MS) k.answers.shift();
      k.last = k.answers.reduce((sum, x) => sum + x.rate, 0) / k.answers.length;
      k.contact = answer.at;
      k.regions = Math.max(1, answer.gateways);
      // The shares of the last second, averaged: a share follows the regions' measured demand,
      // not what the region admitted, so averaging it adds no loop to oscillate in; unaveraged, each
      // answer's noise moved this region's limit (and clamped its counter's burst) every 100 ms,
      // and light callers were refused in the dips over loopback.
      k.rate = k.last;
    }
    k.mode = this.modeAt(k, now);
    if (k.mode === "last_share") k.rate = k.last;
    else if (k.mode === "fallback") k.rate = full / k.regions;
    return k;
  }

  private modeAt(k: KeyShare, now: number): GlobalMode {
    const silent = now - k.contact;
    return silent <= this.contactMs
      ? "connected"
      : silent <= this.fallbackAfterMs
        ? "last_share"
        : "fallback";
  }
}

/**
 * The rate (units per ms) a policy of the global owner gives this region: its fair part of the
 * limit's rate, which a global owner sends with every policy for a global limit; from an owner
 * that does not, the policy's own grant over one interval.
 */
function rateOf(p: Policy, full: number, intervalMs: number): number {
  if (p.share !== undefined) return p.share;
  switch (p.kind) {
    case PolicyKind.ALLOW:
      return full;
    case PolicyKind.REJECT_UNTIL:
      return 0;
    default:
      return p.units / intervalMs;
  }
}

/**
 * The region's shares of its global limits on `registry`, read at scrape time, per counter key
 * (global limits are few): the share, the time since the global tier last answered, and the mode.
 */
export function globalTierMetrics(registry: client.Registry, tier: GlobalTier): void {
  const r = [registry];
  new client.Gauge({
    name: "shardlimit_global_share_per_second",
    help: "This region's share of a global limit (units per second), as it divides it now",
    labelNames: ["key"],
    registers: r,
    collect() {
      this.reset();
      for (const s of tier.status()) this.set({ key: s.key }, s.sharePerS);
    },
  });
  new client.Gauge({
    name: "shardlimit_global_last_contact_seconds",
    help: "Seconds since the global tier last answered for a global limit's key",
    labelNames: ["key"],
    registers: r,
    collect() {
      this.reset();
      for (const s of tier.status()) this.set({ key: s.key }, s.lastContactAgoMs / 1000);
    },
  });
  new client.Gauge({
    name: "shardlimit_global_mode",
    help: "Where a region's share of a global limit comes from: 1 for the mode in force (connected, last_share, fallback)",
    labelNames: ["key", "mode"],
    registers: r,
    collect() {
      this.reset();
      for (const s of tier.status()) {
        for (const m of GLOBAL_MODES) this.set({ key: s.key, mode: m }, s.mode === m ? 1 : 0);
      }
    },
  });
}
