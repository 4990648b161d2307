import client from "prom-client";
import { GatewayLimiter } from "../client/gateway-limiter.js";
import type { ClientTransport, Done, LimiterLogger } from "../client/transport.js";
import type { LimitRule } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { InvalidArgumentError } from "../core/errors.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import { ErrorCode } from "../protocol/item-errors.js";
import type { ReportResponse } from "../protocol/messages.js";
import type { GlobalShares } from "../server/global-shares.js";

/**
 * Where a region's share of a global limit comes from: the global tier's latest answer
 * (`connected`), the share it last had while cut off (`last_share`), or, cut off for longer than
 * `fallbackAfterMs` (or never answered yet), the limit divided equally among the regions
 * (`fallback`).
 */
export type GlobalMode = "connected" | "last_share" | "fallback";
export const GLOBAL_MODES: readonly GlobalMode[] = ["connected", "last_share", "fallback"];

/**
 * The state of the region's link to the global tier, by the outcome of its latest call: reports
 * answered (`connected`); nothing reported yet, limits known or still being asked (`connecting`);
 * refused for want of credentials or a grant there (`refused`: UNAUTHENTICATED, PERMISSION_DENIED,
 * or the report's entries refused so); any other failure (`unreachable`).
 */
export type GlobalLink = "connecting" | "connected" | "refused" | "unreachable";
export const GLOBAL_LINKS: readonly GlobalLink[] = ["connecting", "connected", "refused", "unreachable"];

/** Keys `status` lists one by one (the most demanded); the rest are counted. */
export const GLOBAL_STATUS_KEYS = 20;

/** One global key as `status` and `/metrics` show it. */
export interface GlobalKeyStatus {
  key: string;
  /** What the region divides now, units per second. */
  sharePerS: number;
  /** What the region would keep to if cut off now: the shares of the last second, averaged. */
  lastSharePerS: number;
  /** The region's demand for the key (admitted and refused), units per second over ~1 s. */
  demandPerS: number;
  mode: GlobalMode;
  /** Since the global tier last answered for this key (since the start when it never has). */
  lastContactAgoMs: number;
}

/** The region's link and its global keys: the most demanded ones, and counts of all by mode. */
export interface GlobalTierStatus {
  region: string;
  link: GlobalLink;
  /** The latest failure's words while the link is refused or unreachable. */
  linkError?: string;
  /** The `GLOBAL_STATUS_KEYS` keys of most demand, most first. */
  keys: GlobalKeyStatus[];
  /** Global keys tracked beyond `keys`. */
  more: number;
  /** Every tracked key, counted by mode. */
  modes: Record<GlobalMode, number>;
}

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
  /** Units reported (admitted and refused), decaying with DEMAND_TAU_MS, as of `demandAt`. */
  demand: number;
  demandAt: number;
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
/** Time constant of a key's demand, for ranking keys in `status`. */
const DEMAND_TAU_MS = 1000;

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
  private readonly link: LinkWatch;

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
    this.link = new LinkWatch(opts.transport, (link, error) => this.linkChanged(link, error));
    this.gateway = new GatewayLimiter({
      servers: opts.servers,
      clientId: opts.region,
      transport: this.link,
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
    if (k !== undefined) {
      k.demand = k.demand * Math.exp(-Math.max(0, now - k.demandAt) / DEMAND_TAU_MS) + admitted + rejected;
      k.demandAt = now;
    }
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

  /** The region's share of each global key now (units per second), its mode and its last contact. */
  keyStatus(): GlobalKeyStatus[] {
    const now = this.clock.now();
    return [...this.keys].map(([key, k]) => ({
      key,
      sharePerS: k.rate * 1000,
      lastSharePerS: k.last * 1000,
      demandPerS:
        ((k.demand * Math.exp(-Math.max(0, now - k.demandAt) / DEMAND_TAU_MS)) / DEMAND_TAU_MS) * 1000,
      // The mode by the clock (the share is the one last divided, at the last report).
      mode: this.modeAt(k, now),
      lastContactAgoMs: now - (Number.isFinite(k.contact) ? k.contact : this.since),
    }));
  }

  /**
   * The link's state and the region's global keys for `shardlimit status` and `/metrics`: the
   * `top` keys of most demand one by one, the rest counted, and every key counted by mode.
   */
  status(top = GLOBAL_STATUS_KEYS): GlobalTierStatus {
    const all = this.keyStatus();
    const modes = { connected: 0, last_share: 0, fallback: 0 };
    for (const k of all) modes[k.mode]++;
    all.sort((a, b) => b.demandPerS - a.demandPerS || (a.key < b.key ? -1 : 1));
    const keys = all.slice(0, top);
    const { state, error } = this.link;
    return {
      region: this.region,
      link: state,
      ...(error !== undefined && (state === "refused" || state === "unreachable")
        ? { linkError: error }
        : {}),
      keys,
      more: all.length - keys.length,
      modes,
    };
  }

  /** Each change of the link's state in the log, with what the region keeps to meanwhile. */
  private linkChanged(link: GlobalLink, error: string | undefined): void {
    const fields = { region: this.region, link, ...(error !== undefined ? { err: error } : {}) };
    if (link === "connected") this.logger.info(fields, "link connected: shares come from the global tier");
    else if (link === "refused") {
      this.logger.warn(
        fields,
        "link refused (does the global tier's auth file grant this region's identity report and limits in the global domains?): this region keeps to its last share, then limit / regions",
      );
    } else if (link === "unreachable") {
      this.logger.warn(fields, "link unreachable: this region keeps to its last share, then limit / regions");
    }
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
        demand: 0,
        demandAt: now,
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

/** gRPC status codes of a call refused for its credentials or grants. */
const GRPC_PERMISSION_DENIED = 7;
const GRPC_UNAUTHENTICATED = 16;

function refusedCall(err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  return code === GRPC_PERMISSION_DENIED || code === GRPC_UNAUTHENTICATED;
}

/**
 * The global tier's transport, watched: each call's outcome sets the link's state (reports once
 * one has come back, answered or failed; before that, the limits and view calls), and a change is
 * told to `changed`.
 * Everything is passed through unchanged.
 */
class LinkWatch implements ClientTransport {
  state: GlobalLink = "connecting";
  error: string | undefined;
  private reported = false;

  constructor(
    private readonly inner: ClientTransport,
    private readonly changed: (state: GlobalLink, error: string | undefined) => void,
  ) {}

  private set(state: GlobalLink, error: string | undefined): void {
    const was = this.state;
    this.state = state;
    this.error = error;
    if (was !== state) this.changed(state, error);
  }

  private failed(err: Error): void {
    this.set(refusedCall(err) ? "refused" : "unreachable", err.message);
  }

  /** Done of a call other than a report: it sets the state only until a report has come back. */
  private watched<T>(done: Done<T>): Done<T> {
    return (err, res) => {
      if (!this.reported) {
        if (err !== undefined) this.failed(err);
        else if (this.state !== "connecting") this.set("connecting", undefined);
      }
      done(err, res);
    };
  }

  report(
    address: string,
    req: Parameters<ClientTransport["report"]>[1],
    timeoutMs: number,
    done: Done<ReportResponse>,
  ): void {
    this.inner.report(address, req, timeoutMs, (err, res) => {
      this.reported = true;
      if (err !== undefined) this.failed(err);
      else if (res !== undefined) {
        // Entries refused for want of a grant in their domain: the call went through, the
        // region's counts did not.
        const denied = res.policies.find((p) => p.error?.code === ErrorCode.PERMISSION_DENIED);
        if (denied !== undefined) this.set("refused", denied.error!.message);
        else this.set("connected", undefined);
      }
      done(err, res);
    });
  }

  check(...a: Parameters<ClientTransport["check"]>): void {
    this.inner.check(...a);
  }

  clusterView(address: string, timeoutMs: number, done: Parameters<ClientTransport["clusterView"]>[2]): void {
    this.inner.clusterView(address, timeoutMs, this.watched(done));
  }

  limits(
    address: string,
    knownVersion: string,
    timeoutMs: number,
    done: Parameters<ClientTransport["limits"]>[3],
  ): void {
    this.inner.limits(address, knownVersion, timeoutMs, this.watched(done));
  }

  drop(address: string): void {
    this.inner.drop(address);
  }

  close(): void {
    this.inner.close();
  }
}

/**
 * The region's global limits on `registry`, read at scrape time. Series stay bounded: the link's
 * state, the keys counted by mode, and per key only the `GLOBAL_STATUS_KEYS` of most demand (the
 * share, the time since the global tier last answered, the mode).
 */
export function globalTierMetrics(registry: client.Registry, tier: GlobalTier): void {
  const r = [registry];
  // One status per scrape, shared by the gauges (each collect would otherwise sort every key):
  // a registry collects in the order of registration, so the link gauge, first, starts a scrape.
  let cached: { at: number; status: GlobalTierStatus } | undefined;
  let scrape = 0;
  const status = (): GlobalTierStatus => {
    if (cached === undefined || cached.at !== scrape) cached = { at: scrape, status: tier.status() };
    return cached.status;
  };
  new client.Gauge({
    name: "shardlimit_global_link",
    help: "This region's link to the global tier: 1 for its state (connecting, connected, refused, unreachable)",
    labelNames: ["state"],
    registers: r,
    collect() {
      scrape++;
      const s = status();
      for (const state of GLOBAL_LINKS) this.set({ state }, s.link === state ? 1 : 0);
    },
  });
  new client.Gauge({
    name: "shardlimit_global_keys",
    help: "Global limits' keys this server divides a region's share of, by where the share comes from (connected, last_share, fallback)",
    labelNames: ["mode"],
    registers: r,
    collect() {
      const s = status();
      for (const mode of GLOBAL_MODES) this.set({ mode }, s.modes[mode]);
    },
  });
  new client.Gauge({
    name: "shardlimit_global_share_per_second",
    help: `This region's share of a global limit (units per second), as it divides it now; the ${GLOBAL_STATUS_KEYS} keys of most demand`,
    labelNames: ["key"],
    registers: r,
    collect() {
      this.reset();
      for (const k of status().keys) this.set({ key: k.key }, k.sharePerS);
    },
  });
  new client.Gauge({
    name: "shardlimit_global_last_contact_seconds",
    help: `Seconds since the global tier last answered for a global limit's key; the ${GLOBAL_STATUS_KEYS} keys of most demand`,
    labelNames: ["key"],
    registers: r,
    collect() {
      this.reset();
      for (const k of status().keys) this.set({ key: k.key }, k.lastContactAgoMs / 1000);
    },
  });
  new client.Gauge({
    name: "shardlimit_global_mode",
    help: `Where a region's share of a global limit comes from: 1 for the mode in force (connected, last_share, fallback); the ${GLOBAL_STATUS_KEYS} keys of most demand`,
    labelNames: ["key", "mode"],
    registers: r,
    collect() {
      this.reset();
      for (const k of status().keys) {
        for (const m of GLOBAL_MODES) this.set({ key: k.key, mode: m }, k.mode === m ? 1 : 0);
      }
    },
  });
}
