import { decodeKey, encodeKey } from "../config/key.js";
import { compileSources } from "../config/load.js";
import type { DescriptorEntry, LimitConfig, LimitRule } from "../config/types.js";
import type { Clock, Timer } from "../core/clock.js";
import { InvalidArgumentError, NotReadyError } from "../core/errors.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import { keyPoint } from "../keyspace/hash.js";
import { Routing } from "../keyspace/routing.js";
import { clientRetries, ErrorCode, errorFromItem } from "../protocol/item-errors.js";
import type { KeyPolicy, ReportEntryMsg as ReportEntry, ReportResponse } from "../protocol/messages.js";
import { ClientKey, type Drained } from "./client-key.js";
import { Fallback } from "./fallback.js";
import { OwnerChannel, type PendingReport } from "./owner-channel.js";
import type { ClientTransport } from "./transport.js";

/** A request's descriptor as Envoy sends it: `decide` accepts it in place of a key string. */
export interface Descriptor {
  domain: string;
  entries: readonly DescriptorEntry[];
}

/** What `reserve` admitted, for `settle` once the real cost is known. */
export interface Ticket {
  readonly key: ClientKey | undefined;
  readonly estimate: number;
}

export interface LimiterLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface GatewayLimiterOptions {
  /** Servers to learn the limits and the assignment from (host:port); any one of them will do. */
  servers: readonly string[];
  /** Names this gateway to the owners: their fair shares and dedup are per client id. */
  clientId: string;
  transport: ClientTransport;
  /** Close `transport` with the limiter (default false: a transport passed in may be shared). */
  closeTransport?: boolean;
  clock: Clock;
  reportIntervalMs?: number;
  /** A report unanswered this long counts as failed; its keys fall back to a local share. */
  reportTimeoutMs?: number;
  /** How often the assignment is fetched even when nothing suggests it changed. */
  viewRefreshMs?: number;
  /** Keys unused this long are forgotten (their counts reported first). */
  idleKeyMs?: number;
  /** Counters tracked at most; the least recently used idle ones go first. */
  maxKeys?: number;
  /** Entries per report; the rest wait for the next interval. */
  maxReportEntries?: number;
  /** What `decide` answers before the limits are known: admit (default) or reject. */
  beforeReady?: "open" | "closed";
  /**
   * Re-send window-to-date totals to a key's new owner (default true), so an owner that replaced
   * a crashed one rebuilds the counts. Off only to measure what it is worth.
   */
  resendWindowTotals?: boolean;
  /** For REJECT_FRACTION; seeded in simulations. */
  random?: () => number;
  logger?: LimiterLogger;
}

/** A key no limit applies to: always admitted, never reported. */
class Unlimited {
  lastUsed = 0;
}

type Entry = ClientKey | Unlimited;

const silent: LimiterLogger = { warn() {}, info() {} };

function policyFromWire(p: KeyPolicy, now: number): Policy {
  return {
    kind: (p.kind ?? PolicyKind.ALLOW) as Policy["kind"],
    units: p.units ?? 0,
    fraction: p.fraction ?? 0,
    until: now + (p.validMs ?? 0),
    remaining: p.remaining ?? 0,
    resetAt: now + (p.resetMs ?? 0),
  };
}

export interface LimiterStats {
  keys: number;
  fallbackKeys: number;
  reportsSent: number;
  reportsFailed: number;
  /** Units decided since start, counted as they are taken into reports. */
  unitsAdmitted: number;
  unitsRejected: number;
  generation: number;
  configVersion: string;
}

/**
 * The gateway side of batched mode. `decide` runs on every request with no I/O: it applies the
 * owner's latest policy for the key (or a small optimistic allowance, or a fallback share).
 * Every `reportIntervalMs` the counts go, one report per owner, to the servers that own the keys,
 * and each answer brings the next policies. Keys are resolved with the servers' own limit
 * configuration (fetched with GetLimits), so a gateway knows a key's rule, counter and owner
 * without asking.
 */
export class GatewayLimiter {
  private readonly opts: Required<Omit<GatewayLimiterOptions, "logger">> & { logger: LimiterLogger };
  private config: LimitConfig | undefined;
  private routing: Routing | undefined;
  /** Request key -> its counter (or Unlimited). */
  private readonly keys = new Map<string, Entry>();
  /** Counter key -> counter: request keys that share a counter share one ClientKey. */
  private readonly counters = new Map<string, ClientKey>();
  private dirty: ClientKey[] = [];
  /** Keys given a share (GRANT, REJECT_FRACTION) in answer to counts since the last tick. */
  private holding: ClientKey[] = [];
  private readonly channels = new Map<string, OwnerChannel>();
  private timer: Timer | undefined;
  private early: Timer | undefined;
  private earlyAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  private viewAsking = false;
  private viewAskedAt = Number.NEGATIVE_INFINITY;
  private limitsAsking = false;
  private lastSweep = 0;
  private seedTurn = 0;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  reportsSent = 0;
  reportsFailed = 0;
  private unitsAdmitted = 0;
  private unitsRejected = 0;

  constructor(options: GatewayLimiterOptions) {
    if (options.servers.length === 0) throw new InvalidArgumentError("servers is empty: name at least one");
    if (options.clientId === "") throw new InvalidArgumentError("clientId is empty");
    const interval = options.reportIntervalMs ?? 100;
    if (!(interval >= 1 && interval <= 60_000)) {
      throw new InvalidArgumentError(`reportIntervalMs must be 1..60000, got ${interval}`);
    }
    this.opts = {
      reportIntervalMs: interval,
      // Short enough that one lost message is retried before the policies in force (three
      // intervals long) run out.
      reportTimeoutMs: options.reportTimeoutMs ?? Math.max(200, 2 * interval),
      viewRefreshMs: options.viewRefreshMs ?? 5_000,
      idleKeyMs: options.idleKeyMs ?? 60_000,
      maxKeys: options.maxKeys ?? 100_000,
      maxReportEntries: options.maxReportEntries ?? 10_000,
      beforeReady: options.beforeReady ?? "open",
      resendWindowTotals: options.resendWindowTotals ?? true,
      closeTransport: options.closeTransport ?? false,
      random: options.random ?? Math.random,
      logger: options.logger ?? silent,
      servers: options.servers,
      clientId: options.clientId,
      transport: options.transport,
      clock: options.clock,
    };
  }

  /** Starts fetching the limits and the assignment, and the report loop. */
  start(): void {
    this.refreshLimits();
    this.refreshView(true);
    // Gateways started together should not all report in the same instant.
    this.arm(this.opts.random() * this.opts.reportIntervalMs);
  }

  /** The limits in force (the servers' configuration); undefined until fetched. */
  limitConfig(): LimitConfig | undefined {
    return this.config;
  }

  /** What requests get before the limits are known (`beforeReady`). */
  get admitsBeforeReady(): boolean {
    return this.opts.beforeReady === "open";
  }

  get ready(): boolean {
    return this.config !== undefined && this.routing !== undefined;
  }

  /** Resolves once the limits and the assignment are known; rejects after `timeoutMs`. */
  whenReady(timeoutMs: number): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      this.readyWaiters.push(w);
      this.opts.clock.after(timeoutMs, () => {
        const i = this.readyWaiters.indexOf(w);
        if (i < 0) return;
        this.readyWaiters.splice(i, 1);
        reject(
          new NotReadyError(
            `no server among ${this.opts.servers.join(", ")} answered with ${
              this.config ? "an assignment" : "the limits"
            } within ${timeoutMs} ms`,
          ),
        );
      });
    });
  }

  private checkReady(): void {
    if (!this.ready) return;
    for (const w of this.readyWaiters.splice(0)) w.resolve();
  }

  // ---- the request path -------------------------------------------------------------------

  /**
   * Admits or rejects one request of `cost` units (1 by default; tokens, inference units...).
   * Synchronous and local. Throws InvalidArgumentError for a malformed key or cost.
   */
  decide(key: string | Descriptor, cost = 1): boolean {
    const e = this.entry(key, cost);
    if (e === undefined) return this.opts.beforeReady === "open";
    const now = this.opts.clock.now();
    e.lastUsed = now;
    if (!(e instanceof ClientKey)) return true;
    if (!e.dirty) this.markDirty(e);
    if (e.rule.algorithm === "concurrency") {
      throw new InvalidArgumentError(`${e.rule.id} is a concurrency limit: use acquire and release`);
    }
    if (e.rule.shadowMode) {
      // Counted and reported, never rejected.
      e.admitted += cost;
      return true;
    }
    if (cost > e.rule.limit + (e.rule.algorithm === "token_bucket" ? e.rule.burst : 0)) {
      // More than the limit could ever admit at once (as envoyproxy/ratelimit rejects it).
      e.rejected += cost;
      return false;
    }
    if (e.fallback !== undefined) {
      const ok = e.fallback.take(cost, now);
      if (ok) e.admitted += cost;
      else e.rejected += cost;
      return ok;
    }
    if (e.kind === 0 || now >= e.until) this.reportSoon(now);
    const ok = e.decide(cost, now, this.opts.random());
    if (!e.askedEarly && this.demandMoved(e, ok, now)) {
      e.askedEarly = true;
      this.reportSoon(now);
    }
    return ok;
  }

  /**
   * Whether this key's demand has clearly moved since its policy was made, so a fresh one should
   * be asked for now instead of at the next interval (once per policy):
   * - its grant ran out within half an interval: load moved here;
   * - it was rationed (REJECT_FRACTION) but uses under a quarter of its pace: load moved away,
   *   and its unused share should go to where it went.
   */
  private demandMoved(e: ClientKey, ok: boolean, now: number): boolean {
    const interval = this.opts.reportIntervalMs;
    const elapsed = now - e.appliedAt;
    if (!ok) return e.units <= 0 && elapsed < interval / 2;
    if (e.kind !== PolicyKind.REJECT_FRACTION || elapsed < interval / 4 || elapsed > interval) return false;
    const used = e.granted - e.units;
    return used < (0.25 * e.granted * elapsed) / interval;
  }

  /**
   * Reports now rather than at the next interval: a key is decided without a policy (new, or idle
   * past its policy's life), or its demand moved. At most one early report per tenth of an interval.
   */
  private reportSoon(now: number): void {
    if (this.early !== undefined) return;
    const wait = Math.max(0, this.earlyAt + this.opts.reportIntervalMs / 10 - now);
    this.early = this.opts.clock.after(wait, () => {
      this.early = undefined;
      this.earlyAt = this.opts.clock.now();
      this.tick(true);
    });
  }

  /**
   * Admits a request whose cost is known only afterwards (LLM output tokens): `estimate` is
   * counted now, and `settle` corrects it. Null when rejected.
   */
  reserve(key: string | Descriptor, estimate: number): Ticket | null {
    if (!this.decide(key, estimate)) return null;
    const e = this.entry(key, estimate);
    return { key: e instanceof ClientKey ? e : undefined, estimate };
  }

  /** Charges the difference between the real cost and the estimate `reserve` counted. */
  settle(ticket: Ticket, actualCost: number): void {
    checkCost(actualCost);
    const k = ticket.key?.current();
    if (k === undefined) return;
    const delta = actualCost - ticket.estimate;
    if (delta > 0) {
      k.admitted += delta;
      k.sinceAsked += delta;
      k.units -= delta;
    } else k.refund -= delta;
    if (!k.dirty) this.markDirty(k);
  }

  /**
   * Takes `amount` slots of a concurrency limit (1 by default); false if the gateway's share of
   * the limit is in use. Every true must be followed by `release` with the same amount.
   */
  acquire(key: string | Descriptor, amount = 1): boolean {
    const e = this.entry(key, amount);
    if (e === undefined) return this.opts.beforeReady === "open";
    const now = this.opts.clock.now();
    e.lastUsed = now;
    if (!(e instanceof ClientKey)) return true;
    if (e.rule.algorithm !== "concurrency") {
      throw new InvalidArgumentError(`${e.rule.id} is a ${e.rule.algorithm} limit: use decide`);
    }
    if (!e.dirty) this.markDirty(e);
    if (e.kind === 0 || now >= e.until) this.reportSoon(now);
    let max: number;
    if (e.fallback !== undefined) max = e.fallback.maxHeld;
    else if (e.kind === 0 || now >= e.until) max = e.held + e.allowance;
    else max = e.units;
    const ok = e.held + amount <= max || (e.kind === PolicyKind.ALLOW && now < e.until);
    if (ok) {
      e.held += amount;
      e.admitted += amount;
      if (e.kind === 0 || now >= e.until) e.allowance -= amount;
    } else e.rejected += amount;
    return ok;
  }

  release(key: string | Descriptor, amount = 1): void {
    const e = this.entry(key, amount);
    if (!(e instanceof ClientKey)) return;
    e.held = Math.max(0, e.held - amount);
    if (!e.dirty) this.markDirty(e);
  }

  /**
   * A synchronous, exact decision by the key's owner (`Check`), for the few calls that must not
   * rely on a policy: one network round trip, sent straight to the owner (any server would
   * forward it). Resolves true for keys no limit applies to; rejects when no server answers.
   */
  check(key: string | Descriptor, cost = 1): Promise<boolean> {
    const e = this.entry(key, cost);
    if (e === undefined) return Promise.reject(new NotReadyError("the limits are not known yet"));
    if (!(e instanceof ClientKey)) return Promise.resolve(true);
    const address = this.routing?.ownerOf(e.point) ?? this.opts.servers[0]!;
    const req = { items: [{ key: e.key, cost }], atomic: false, generation: this.routing?.generation ?? 0 };
    return new Promise((resolve, reject) => {
      this.opts.transport.check(address, req, this.opts.reportTimeoutMs * 5, (err, res) => {
        if (err !== undefined || res === undefined) return reject(err ?? new Error("no answer"));
        if (res.generation > (this.routing?.generation ?? 0)) this.refreshView(true);
        const r = res.results[0];
        if (r?.error?.code) return reject(errorFromItem(r.error, res.generation));
        resolve(r?.allowed === true);
      });
    });
  }

  /** The rule and the owner's latest figures for a key: what the sidecar answers Envoy with. */
  describe(key: string | Descriptor):
    | {
        rule: LimitRule;
        /** Whether the owner has answered for this key yet. */
        known: boolean;
        /** Cluster-wide units left, and when the counter is full again, as of the owner's last answer. */
        remaining: number;
        resetAt: number;
        /** Units this gateway admitted since that answer. */
        admittedSince: number;
        fallback: boolean;
      }
    | undefined {
    const e = this.entry(key, 1);
    if (!(e instanceof ClientKey)) return undefined;
    return {
      rule: e.rule,
      known: e.kind !== 0,
      remaining: e.remaining,
      resetAt: e.resetAt,
      admittedSince: e.admitted,
      fallback: e.fallback !== undefined,
    };
  }

  private markDirty(k: ClientKey): void {
    k.dirty = true;
    this.dirty.push(k);
  }

  /** The key's counter, resolving it on first sight; undefined before the limits are known. */
  private entry(key: string | Descriptor, cost: number): Entry | undefined {
    checkCost(cost);
    const name = typeof key === "string" ? key : descriptorKey(key);
    const hit = this.keys.get(name);
    if (hit !== undefined) return hit;
    const config = this.config;
    if (config === undefined) return undefined;
    const e = this.resolve(config, name);
    this.keys.set(name, e);
    return e;
  }

  private resolve(config: LimitConfig, name: string): Entry {
    const d = decodeKey(name);
    if (typeof d === "string") throw new InvalidArgumentError(`${d}: ${JSON.stringify(name.slice(0, 100))}`);
    const r = config.resolve(d.domain, d.entries);
    if (r === undefined || r.rule.unlimited) return new Unlimited();
    let k = this.counters.get(r.counterKey);
    if (k !== undefined && k.rule !== r.rule && sameLimit(k.rule, r.rule)) {
      k.rule = r.rule; // a reload that left this limit as it was: keep the policy in force
    } else if (k === undefined || k.rule !== r.rule) {
      const fresh = new ClientKey(r.counterKey, r.rule, keyPoint(r.shardKey));
      if (k !== undefined) {
        carryOver(k, fresh);
        k.replacedBy = fresh;
      }
      k = fresh;
      this.counters.set(r.counterKey, k);
      if (!k.dirty) this.markDirty(k);
    }
    return k;
  }

  // ---- reporting --------------------------------------------------------------------------

  private arm(ms: number): void {
    if (this.closed) return;
    this.timer = this.opts.clock.after(ms, () => {
      try {
        this.tick();
      } catch (e) {
        this.opts.logger.warn({ err: (e as Error).message }, "report tick failed");
      }
      this.arm(this.opts.reportIntervalMs);
    });
  }

  /**
   * One report interval: a report per owner with the keys used since the last one. An `early`
   * tick that finds an owner busy sends to it as soon as the answer is in.
   */
  tick(early = false): void {
    const routing = this.routing;
    const now = this.opts.clock.now();
    if (routing !== undefined) {
      // A key that was given a share and then went unused is reported once with zero counts, so
      // its owner stops reserving a share for it and gives it to where the demand went.
      for (const k of this.holding) if (!k.dirty) this.markDirty(k);
      this.holding = [];
      const batches = new Map<string, ClientKey[]>();
      const keys = this.dirty;
      this.dirty = [];
      for (const k of keys) {
        k.dirty = false;
        if (this.counters.get(k.key) !== k) continue; // replaced by a config change
        const address = routing.ownerOf(k.point);
        let b = batches.get(address);
        if (b === undefined) {
          b = [];
          batches.set(address, b);
        }
        b.push(k);
      }
      for (const [address, batch] of batches) this.send(this.channel(address), batch, now, early);
    }
    if (now - this.lastSweep >= 1000) {
      this.lastSweep = now;
      this.sweep(now);
    }
    // Until a first assignment arrives, ask often; after, every viewRefreshMs.
    const every = this.routing === undefined ? 5 * this.opts.reportIntervalMs : this.opts.viewRefreshMs;
    if (now - this.viewAskedAt >= every) this.refreshView(true);
  }

  private channel(address: string): OwnerChannel {
    let c = this.channels.get(address);
    if (c === undefined) {
      c = new OwnerChannel(address, this.opts.clock.now() * 1000);
      this.channels.set(address, c);
    }
    return c;
  }

  private send(ch: OwnerChannel, batch: ClientKey[], now: number, early: boolean): void {
    if (ch.down) {
      for (const k of batch) this.maybeFallback(ch, k, now);
    }
    if (ch.inflight !== undefined || ch.failed !== undefined) {
      // Busy, or a failed report must go first: these keys' counts ride in a later report.
      for (const k of batch) if (!k.dirty) this.markDirty(k);
      if (early) ch.wantSoon = true;
      const f = ch.failed;
      if (f !== undefined && ch.inflight === undefined) {
        ch.failed = undefined;
        this.transmit(ch, f);
      }
      return;
    }
    const n = Math.min(batch.length, this.opts.maxReportEntries);
    const entries: ReportEntry[] = new Array(n);
    const drained: Drained[] = new Array(n);
    const resent: boolean[] = new Array(n);
    const keys = batch.slice(0, n);
    for (let i = 0; i < n; i++) {
      const k = keys[i]!;
      k.roll(now);
      const d = k.take();
      drained[i] = d;
      this.unitsAdmitted += d.admitted;
      this.unitsRejected += d.rejected;
      const entry: ReportEntry = {
        key: "",
        admitted: d.admitted,
        rejected: d.rejected,
        held: k.held,
        windowAdmitted: 0,
      };
      // A new owner, or a restarted one (both start empty, unless counters were handed over),
      // rebuilds the key's window from this total.
      resent[i] =
        this.opts.resendWindowTotals &&
        (k.reportedTo !== ch.address || k.reportedInc !== ch.incarnation || ch.incarnation === "");
      if (resent[i]) entry.windowAdmitted = k.windowTotal + d.admitted;
      if (k.handleAddress === ch.address && k.handleEpoch === ch.keyEpoch && k.handle !== 0) {
        entry.keyHandle = k.handle;
      } else entry.key = k.key;
      entries[i] = entry;
    }
    for (let i = n; i < batch.length; i++) this.markDirty(batch[i]!);
    const req = {
      clientId: this.opts.clientId,
      seq: ch.nextSeq(),
      generation: this.routing?.generation ?? 0,
      intervalMs: this.opts.reportIntervalMs,
      entries,
      keyEpoch: ch.keyEpoch,
      spanMs: Number.isNaN(ch.lastBuiltAt)
        ? this.opts.reportIntervalMs
        : Math.min(60_000, Math.max(1, Math.round(now - ch.lastBuiltAt))),
    };
    ch.lastBuiltAt = now;
    this.transmit(ch, { req, keys, drained, resent, incarnation: ch.incarnation, attempts: 0 });
  }

  private transmit(ch: OwnerChannel, p: PendingReport): void {
    ch.inflight = p;
    p.attempts++;
    this.reportsSent++;
    this.opts.transport.report(ch.address, p.req, this.opts.reportTimeoutMs, (err, res) => {
      if (ch.inflight !== p) return; // dropped when the owner left the cluster
      ch.inflight = undefined;
      if (this.closed) return;
      try {
        if (err !== undefined || res === undefined) this.failed(ch, p, err);
        else this.answered(ch, p, res);
      } catch (e) {
        // A gateway must never go down with its limiter: log it and carry on.
        this.opts.logger.warn(
          { owner: ch.address, err: (e as Error).message },
          "handling a report's answer failed",
        );
      }
      if (ch.wantSoon) {
        ch.wantSoon = false;
        this.reportSoon(this.opts.clock.now());
      }
    });
  }

  private failed(ch: OwnerChannel, p: PendingReport, err: Error | undefined): void {
    this.reportsFailed++;
    ch.failures++;
    ch.lastError = err?.message ?? "no answer";
    ch.failed = p;
    if (ch.failures === 1) {
      this.opts.logger.warn(
        { owner: ch.address, err: ch.lastError },
        "owner unreachable; its keys fall back to a local share",
      );
    }
    const now = this.opts.clock.now();
    for (const key of p.keys) {
      const k = key.current();
      this.maybeFallback(ch, k, now);
      if (!k.dirty) this.markDirty(k);
    }
    // The owner may have died: a new assignment would name its successor.
    this.refreshView(false);
    // Most failures are one lost message: send it again now rather than at the next interval.
    if (ch.failures === 1) this.reportSoon(this.opts.clock.now());
  }

  /**
   * One lost message is not an outage: a key keeps its policy while it is valid and goes to the
   * fallback share once the owner has failed twice in a row or the policy has run out.
   */
  private maybeFallback(ch: OwnerChannel, k: ClientKey, now: number): void {
    if (k.fallback === undefined && (ch.failures >= 2 || now >= k.until)) this.enterFallback(k, now);
  }

  private enterFallback(k: ClientKey, now: number): void {
    k.roll(now);
    k.fallback = new Fallback(k.rule, k.gateways, k.remaining, k.windowTotal + k.admitted, now);
  }

  private answered(ch: OwnerChannel, p: PendingReport, res: ReportResponse): void {
    const now = this.opts.clock.now();
    if (ch.failures > 0) this.opts.logger.info({ owner: ch.address }, "owner reachable again");
    ch.failures = 0;
    const handlesValid = res.keyEpoch === ch.keyEpoch;
    ch.keyEpoch = res.keyEpoch;
    const inc = res.incarnation ?? "";
    if (inc !== ch.incarnation) {
      if (ch.incarnation !== "")
        this.opts.logger.info({ owner: ch.address }, "owner restarted: re-sending window totals");
      ch.incarnation = inc;
    }
    let refresh = false;
    for (let i = 0; i < p.keys.length; i++) {
      const k = p.keys[i]!.current();
      const d = p.drained[i]!;
      const pol = res.policies[i];
      if (pol === undefined) {
        k.restore(d);
      } else if ((pol.error?.code ?? 0) !== 0) {
        const code = pol.error!.code;
        if (clientRetries(code)) {
          k.restore(d);
          if (code === ErrorCode.NOT_OWNER) refresh = true;
          if (code === ErrorCode.UNKNOWN_KEY_HANDLE) k.handle = 0;
          if (code === ErrorCode.COUNTERS_EXHAUSTED && k.fallback === undefined) {
            this.enterFallback(k, now);
          }
        } else {
          // Invalid here though valid in the limits we hold: our copy is stale. Counts dropped.
          this.opts.logger.warn({ key: k.key, err: pol.error!.message }, "owner refused a key");
          this.refreshLimits();
        }
      } else {
        // The entry built the owner's window if it carried the total, or if the owner is the
        // incarnation it was sent to; otherwise (the owner restarted meanwhile) the next report
        // carries the total.
        k.acknowledged(d, ch.address, p.resent[i] || p.incarnation === inc ? inc : "", now);
        if (pol.keyHandle) {
          k.handle = pol.keyHandle;
          k.handleAddress = ch.address;
          k.handleEpoch = res.keyEpoch;
        } else if (!handlesValid && k.handleAddress === ch.address) k.handle = 0;
        k.applyPolicy(policyFromWire(pol, now), pol.gateways || 1, now);
        if (
          (d.admitted > 0 || d.rejected > 0) &&
          (k.kind === PolicyKind.GRANT || k.kind === PolicyKind.REJECT_FRACTION)
        ) {
          this.holding.push(k);
        }
      }
      if (k.admitted > 0 || k.rejected > 0) if (!k.dirty) this.markDirty(k);
    }
    if (refresh || res.generation > (this.routing?.generation ?? 0)) this.refreshView(true);
    if (this.config !== undefined && res.configVersion !== "" && res.configVersion !== this.config.version) {
      this.refreshLimits();
    }
  }

  // ---- assignment and limits --------------------------------------------------------------

  /** Asks servers in turn for the assignment; `force` skips the throttle. */
  private refreshView(force: boolean): void {
    const now = this.opts.clock.now();
    if (this.viewAsking || this.closed) return;
    if (!force && now - this.viewAskedAt < 4 * this.opts.reportIntervalMs) return;
    this.viewAsking = true;
    this.viewAskedAt = now;
    const candidates = this.candidates();
    const ask = (i: number): void => {
      if (i >= candidates.length || this.closed) {
        this.viewAsking = false;
        return;
      }
      const address = candidates[i]!;
      this.opts.transport.clusterView(address, this.opts.reportTimeoutMs, (err, view) => {
        if (err !== undefined || view === undefined) return ask(i + 1);
        const r = Routing.fromView(view, address);
        if (typeof r === "string") return ask(i + 1);
        this.viewAsking = false;
        this.install(r);
      });
    };
    ask(0);
  }

  /** Members of the assignment we hold first (healthy ones first), then the configured seeds. */
  private candidates(): string[] {
    const seeds = this.opts.servers;
    const turn = this.seedTurn++;
    const rotated = seeds.map((_, i) => seeds[(i + turn) % seeds.length]!);
    const members = this.routing?.addresses ?? [];
    const healthy = members.filter((a) => !(this.channels.get(a)?.down ?? false));
    const rest = members.filter((a) => this.channels.get(a)?.down ?? false);
    return [...new Set([...healthy, ...rotated, ...rest])];
  }

  private install(r: Routing): void {
    const held = this.routing;
    if (held !== undefined && r.generation < held.generation && r.generation !== 0) return;
    this.routing = r;
    if (held === undefined || r.generation !== held.generation) {
      const members = new Set(r.addresses);
      for (const [address, ch] of this.channels) {
        if (members.has(address)) continue;
        // Gone from the cluster: whatever it was sent may or may not have been applied before it
        // died; the successor rebuilds the window from the re-sent totals, which include it.
        const now = this.opts.clock.now();
        for (const p of [ch.inflight, ch.failed]) {
          if (p === undefined) continue;
          for (let i = 0; i < p.keys.length; i++)
            p.keys[i]!.current().acknowledged(p.drained[i]!, address, "", now);
        }
        // A late answer from it must not be applied as well.
        ch.inflight = undefined;
        ch.failed = undefined;
        this.channels.delete(address);
        this.opts.transport.drop(address);
      }
    }
    this.checkReady();
  }

  private refreshLimits(): void {
    if (this.limitsAsking || this.closed) return;
    this.limitsAsking = true;
    const candidates = this.candidates();
    const known = this.config?.version ?? "";
    const ask = (i: number): void => {
      if (this.closed) return;
      if (i >= candidates.length) {
        this.limitsAsking = false;
        // Without limits nothing can be decided: keep trying.
        if (this.config === undefined)
          this.opts.clock.after(this.opts.reportIntervalMs * 5, () => this.refreshLimits());
        return;
      }
      const address = candidates[i]!;
      this.opts.transport.limits(address, known, this.opts.reportTimeoutMs, (err, limits) => {
        if (err !== undefined || limits === undefined) return ask(i + 1);
        this.limitsAsking = false;
        if (limits.unchanged) return;
        try {
          this.setConfig(compileSources(limits.sources));
        } catch (e) {
          this.opts.logger.warn(
            { server: address, err: (e as Error).message },
            "limits from server do not compile",
          );
        }
      });
    };
    ask(0);
  }

  /** Swaps in new limits: keys are resolved again on next use; counts carry over. */
  setConfig(config: LimitConfig): void {
    const first = this.config === undefined;
    this.config = config;
    if (!first) this.keys.clear();
    this.checkReady();
  }

  // ---- housekeeping -----------------------------------------------------------------------

  private sweep(now: number): void {
    const cutoff = now - this.opts.idleKeyMs;
    for (const [name, e] of this.keys) {
      if (e.lastUsed < cutoff && (!(e instanceof ClientKey) || idle(e))) this.keys.delete(name);
    }
    for (const [name, k] of this.counters) {
      if (k.lastUsed < cutoff && idle(k)) this.counters.delete(name);
    }
    if (this.counters.size > this.opts.maxKeys) {
      // Oldest first (Map order is insertion order); keys with counts to report stay.
      const recent = now - this.opts.reportIntervalMs * 10;
      for (const [name, k] of this.counters) {
        if (this.counters.size <= this.opts.maxKeys) break;
        if (k.lastUsed < recent && idle(k)) this.counters.delete(name);
      }
      for (const [name, e] of this.keys) {
        if (e instanceof ClientKey && this.counters.get(e.key) !== e) this.keys.delete(name);
      }
    }
    // Request keys (unlimited ones, and names sharing a counter) are capped too: dropping one
    // only means resolving it again on its next use.
    if (this.keys.size > 2 * this.opts.maxKeys) {
      for (const name of this.keys.keys()) {
        if (this.keys.size <= this.opts.maxKeys) break;
        this.keys.delete(name);
      }
    }
  }

  stats(): LimiterStats {
    let fallback = 0;
    for (const k of this.counters.values()) if (k.fallback !== undefined) fallback++;
    return {
      keys: this.counters.size,
      fallbackKeys: fallback,
      reportsSent: this.reportsSent,
      reportsFailed: this.reportsFailed,
      unitsAdmitted: this.unitsAdmitted,
      unitsRejected: this.unitsRejected,
      generation: this.routing?.generation ?? 0,
      configVersion: this.config?.version ?? "",
    };
  }

  /** Counter keys currently decided by the local fallback share (owner unreachable). */
  fallbackKeys(max = 100): string[] {
    const out: string[] = [];
    for (const k of this.counters.values()) {
      if (k.fallback !== undefined) out.push(k.key);
      if (out.length >= max) break;
    }
    return out;
  }

  /** Stops reporting. Counts not yet reported are lost; call `flush` first to send them. */
  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.early?.cancel();
    if (this.opts.closeTransport) this.opts.transport.close();
    for (const w of this.readyWaiters.splice(0)) w.reject(new NotReadyError("the limiter was closed"));
  }

  /** Sends what is pending now instead of at the next interval. */
  flush(): void {
    this.tick();
  }
}

/** Whether two rules limit the same way (a reload recompiles every rule into a new object). */
function sameLimit(a: LimitRule, b: LimitRule): boolean {
  return (
    a.id === b.id &&
    a.algorithm === b.algorithm &&
    a.limit === b.limit &&
    a.windowMs === b.windowMs &&
    a.burst === b.burst &&
    a.unlimited === b.unlimited &&
    a.shadowMode === b.shadowMode &&
    a.localAllowance === b.localAllowance &&
    a.failMode === b.failMode &&
    a.leaseTimeoutMs === b.leaseTimeoutMs
  );
}

function idle(k: ClientKey): boolean {
  return !k.dirty && k.admitted === 0 && k.rejected === 0 && k.held === 0;
}

function carryOver(from: ClientKey, to: ClientKey): void {
  to.admitted = from.admitted;
  to.rejected = from.rejected;
  to.held = from.held;
  to.refund = from.refund;
  to.reportedTo = from.reportedTo;
  to.reportedInc = from.reportedInc;
  to.windowAt = from.windowAt;
  to.windowTotal = from.windowTotal;
}

function descriptorKey(d: Descriptor): string {
  if (typeof d !== "object" || d === null || typeof d.domain !== "string" || !Array.isArray(d.entries)) {
    throw new InvalidArgumentError("a descriptor needs a domain and an entries array");
  }
  return encodeKey(d.domain, d.entries);
}

function checkCost(cost: number): void {
  if (!(cost >= 0) || cost === Number.POSITIVE_INFINITY) {
    throw new InvalidArgumentError(`cost must be a finite number >= 0, got ${cost}`);
  }
}
