import { randomBytes } from "node:crypto";
import { keyDomain } from "../config/key.js";
import type { LimitConfig, LimitRule, Resolved } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import type { Counter } from "../core/counter.js";
import { CapacityError, type CheckItem, type Decision } from "../core/decision.js";
import type { Engine } from "../core/engine.js";
import { InvalidArgumentError, PermissionDeniedError } from "../core/errors.js";
import { bothPolicies, type Policy, PolicyKind } from "../core/policy.js";
import { PRIORITIES, PRIORITY_RANK } from "../core/priority.js";
import { amountProblem, entryAmountProblem, type InputLimits, keyProblem } from "../protocol/input-limits.js";
import { ErrorCode, errorName, type ItemError, itemError } from "../protocol/item-errors.js";
import type {
  AcquireRequest,
  AcquireResponse,
  CheckRequest,
  CheckResponse,
  CheckResult,
  ClusterView,
  KeyPolicy,
  Limits,
  LimitsRequest,
  PoolReportRequest,
  PoolReportResponse,
  ReleaseRequest,
  ReleaseResponse,
  ReportEntryMsg,
  ReportRequest,
  ReportResponse,
  SettleRequest,
  SettleResponse,
} from "../protocol/messages.js";
import {
  AT_ADMITTED,
  AT_HANDLE,
  AT_HELD,
  AT_REFUNDED,
  AT_REJECTED,
  AT_WINDOW_ADMITTED,
  DecodedReport,
  ENTRY_NUMBERS,
  P_KEY_HANDLE,
  PolicyRows,
  ReportAnswer,
} from "../protocol/report-codec.js";
import { addCharges, countTenant, joined, rankOfPriority } from "./charges.js";
import { chargeShares, type GlobalShares, reportCharged } from "./global-shares.js";
import { type Inspection, inspect } from "./inspect.js";
import { keyPolicyRow, ms } from "./key-policy.js";
import type { LimiterMetrics } from "./metrics.js";
import type { Ownership } from "./ownership.js";
import { PoolDesk } from "./pools.js";
import { READ_AHEAD_ENTRIES, readAhead } from "./read-ahead.js";
import { checkBatch, checkId } from "./request-bounds.js";
import { type CachedKey, KeyResolver } from "./resolver.js";
import { TicketDesk } from "./tickets.js";
import { explainPolicy, policyRejectKind, WhyLog, type WhyLogOptions } from "./why.js";

export interface LimiterDeps {
  engine: Engine;
  clock: Clock;
  config: LimitConfig;
  ownership: Ownership;
  limits: InputLimits;
  metrics: LimiterMetrics;
  /** Ticket ids (tests make them predictable); random 128 bits by default. */
  newTicketId?: () => string;
  /** This region's shares of `global: true` limits (`serve --global-tier`); none: decided as configured. */
  global?: GlobalShares;
  /** Bounds of the memory of recent rejections per key (server/why.ts). */
  why?: WhyLogOptions;
}

/** Policies for keys no limit applies to: allow, and ask again in a minute. */
const NO_LIMIT_VALID_MS = 60_000;
const DEFAULT_INTERVAL_MS = 100;
/** Client ids kept interned (each at most maxIdLength characters). */
const MAX_INTERNED_CLIENT_IDS = 10_000;
/**
 * The request path of shardlimit's own API: validate, resolve the key's rule, check ownership,
 * call the engine. Synchronous and free of gRPC, so it is tested and benchmarked directly; the
 * gRPC layer only decodes, calls this, and maps a thrown `InvalidArgumentError` to a status.
 */
export class Limiter {
  private resolver: KeyResolver;
  /** This process's counters: a restart makes a new one (see ReportResponse.incarnation). */
  readonly incarnation = randomBytes(8).toString("hex");
  readonly engine: Engine;
  private readonly clock: Clock;
  private readonly ownership: Ownership;
  private readonly limits: InputLimits;
  private readonly metrics: LimiterMetrics;
  /** Exact settlement: tickets of Check items, settled by Settle (server/tickets.ts). */
  readonly tickets: TicketDesk;
  private readonly global: GlobalShares | undefined;
  /** Pools of backends (issue 14): shed when overloaded, lend idle capacity (server/pools.ts). */
  readonly pools: PoolDesk;
  /** The last rejections and gateway policies per key, for `inspect` (bounded). */
  readonly why: WhyLog;
  private readonly clientIds = new Map<string, string>();
  private readonly checkScratch = new CheckScratch();

  /** The entry being counted when the request came as columns (`DecodedReport`), reused. */
  private readonly entry: ReportEntryMsg = {
    key: "",
    keyHandle: 0,
    admitted: 0.5,
    rejected: 0.5,
    held: 0.5,
    windowAdmitted: 0.5,
    refunded: 0.5,
  };

  constructor(deps: LimiterDeps) {
    this.global = deps.global;
    this.why = new WhyLog(deps.why);
    this.engine = deps.engine;
    this.clock = deps.clock;
    this.ownership = deps.ownership;
    this.limits = deps.limits;
    this.metrics = deps.metrics;
    this.resolver = new KeyResolver(deps.config);
    this.tickets = new TicketDesk({ ...deps, newId: deps.newTicketId });
    this.pools = new PoolDesk(deps.config, deps.ownership, deps.limits);
  }

  get config(): LimitConfig {
    return this.resolver.config;
  }

  /** Swaps the whole configuration at once; requests in flight finish on the old one. */
  setConfig(config: LimitConfig): void {
    this.resolver = new KeyResolver(config);
    this.pools.setConfig(config);
  }

  /** The shard key that places `key`'s counter; undefined if the key is invalid or unlimited. */
  shardKeyOf(key: string): string | undefined {
    if (keyProblem(key, this.limits) !== undefined) return undefined;
    const r = this.resolver.resolve(key);
    return typeof r === "object" ? r.shardKey : undefined;
  }

  /** Resolves `key` and checks that this server may serve it; an ItemError if not. */
  private route(key: string, asked: number): Resolved | undefined | ItemError {
    const bad = keyProblem(key, this.limits);
    if (bad !== undefined) return itemError(ErrorCode.INVALID_KEY, bad);
    return this.owned(this.resolver.lookup(key), asked);
  }

  /** Whether this server may decide `r` for a request routed with generation `asked`. */
  private owned(hit: CachedKey, asked: number): Resolved | undefined | ItemError {
    const r = hit.resolved;
    if (typeof r === "string") {
      return itemError(ErrorCode.INVALID_KEY, `${r}: ${JSON.stringify(hit.key.slice(0, 100))}`);
    }
    if (r === undefined) return undefined;
    const generation = this.ownership.generation();
    // The caller knows an assignment this server has not seen (the router waited for it): the key
    // may be another server's there, so deciding it on the old view could count it twice.
    if (asked > generation) {
      return itemError(
        ErrorCode.NOT_OWNER,
        `this server has not confirmed generation ${asked} yet (it serves generation ${generation})`,
      );
    }
    const verdict = this.ownership.check(r.shardKey, hit);
    if (verdict === "own") return r;
    return verdict === "not_owner"
      ? itemError(ErrorCode.NOT_OWNER, `not the owner of this key in generation ${generation}`)
      : itemError(
          ErrorCode.SLICE_NOT_READY,
          `this key's slice is being handed over (generation ${generation})`,
        );
  }

  /**
   * `caller` (under an authorisation file): its identity and whether it may report for a domain.
   * An entry of another domain gets PERMISSION_DENIED and changes nothing; a report whose every
   * entry is refused is refused whole, before its (client id, seq) is recorded.
   */
  reportAndGetPolicy(req: ReportRequest, caller?: ReportCaller): ReportResponse {
    checkId(this.limits, "client_id", req.clientId);
    if (!Number.isSafeInteger(req.seq) || req.seq < 1) {
      throw new InvalidArgumentError(`seq must be a positive integer, got ${req.seq}`);
    }
    // The server's decoder gives the entries as columns: read into one reused entry, no object
    // per entry (nothing below keeps `e` past its turn).
    const cols = req instanceof DecodedReport ? req : undefined;
    const count = cols !== undefined ? cols.count : req.entries.length;
    checkBatch(this.limits, "report", count);
    const denied = caller === undefined ? undefined : this.deniedEntries(req, caller);
    // The interval sets how long a silent gateway's share and the key's counter are kept (ten
    // intervals): the caller chooses it, so it is bounded. Below the minimum it is taken as the
    // minimum (gateways may report every millisecond; that only shortens what is kept).
    const { minIntervalMs, maxIntervalMs } = this.limits;
    if (req.intervalMs > maxIntervalMs) {
      throw new InvalidArgumentError(
        `interval_ms ${req.intervalMs} is over the maximum of maxIntervalMs ${maxIntervalMs}`,
      );
    }
    const interval =
      req.intervalMs > 0
        ? Math.max(minIntervalMs, req.intervalMs)
        : Math.min(DEFAULT_INTERVAL_MS, maxIntervalMs);
    const span = req.spanMs ? Math.min(maxIntervalMs, Math.max(1, req.spanMs)) : interval;
    const now = this.clock.now();
    const clientId = this.internClientId(req.clientId);
    const verdict = this.engine.acceptReport(clientId, req.seq, now);
    // A report older than the dedup window cannot be told from one already applied: not applying
    // it may lose its counts, applying it may double them; the invariant is never to double. The
    // answer says so (too_old), so the client sends the counts again under newer numbers rather
    // than taking them as applied.
    const apply = verdict === "new";
    // One row of numbers per entry's policy, no object each (`PolicyRows`).
    const rows = new PolicyRows(count);
    let domain = "";
    let admittedSum = 0;
    let rejectedSum = 0;
    let applied = 0;
    const scratch = this.entry;
    // The next entries' state is read ahead of counting them, a few dozen at a time (read-ahead.ts).
    let readTo = 0;
    for (let i = 0; i < count; i++) {
      if (cols !== undefined && i === readTo) {
        readTo = Math.min(count, i + READ_AHEAD_ENTRIES);
        readAhead(this.resolver, cols, clientId, i, readTo);
      }
      const e = cols !== undefined ? columnEntry(cols, i, scratch) : req.entries[i]!;
      const refused = denied?.get(i);
      if (refused !== undefined) {
        rows.set(
          i,
          this.failItem(
            "report",
            itemError(ErrorCode.PERMISSION_DENIED, reportRefusal(caller!, JSON.stringify(refused))),
          ),
        );
        continue;
      }
      const bad = entryAmountProblem(e, this.limits);
      if (bad !== undefined) {
        rows.set(i, this.failItem("report", itemError(ErrorCode.INVALID_AMOUNT, bad)));
        continue;
      }
      const byString = e.key !== "" || !e.keyHandle;
      let hit: CachedKey | undefined;
      let r: Resolved | undefined | ItemError;
      if (byString) {
        const badKey = keyProblem(e.key, this.limits);
        hit = badKey === undefined ? this.resolver.lookup(e.key) : undefined;
        r = hit === undefined ? itemError(ErrorCode.INVALID_KEY, badKey!) : this.owned(hit, req.generation);
      } else {
        hit = this.resolver.byHandle(req.keyEpoch, e.keyHandle!);
        r =
          hit === undefined
            ? this.unknownHandle(req.keyEpoch, e.keyHandle!)
            : this.owned(hit, req.generation);
      }
      if (r === undefined) {
        rows.set(
          i,
          byString
            ? { kind: 1, validMs: NO_LIMIT_VALID_MS, keyHandle: hit!.handle }
            : { kind: 1, validMs: NO_LIMIT_VALID_MS },
        );
        continue;
      }
      if ("code" in r) {
        rows.set(i, this.failItem("report", r));
        continue;
      }
      let p: Policy;
      try {
        let c = hit!.counter;
        if (c === undefined || c.removed || c.algorithm !== r.rule.algorithm) {
          c = this.engine.counterFor(r.counterKey, r.rule, now, r.shardKey);
          hit!.counter = c;
        }
        p = this.reportKey(hit!, r, c, clientId, e, apply, interval, now, span);
      } catch (err) {
        if (!(err instanceof CapacityError)) throw err;
        rows.set(i, this.failItem("report", itemError(ErrorCode.COUNTERS_EXHAUSTED, err.message)));
        continue;
      }
      this.metrics.policy(p.kind);
      const gateways = hit!.counter?.clients?.size ?? 1;
      this.notePolicy(r, clientId, p, e, span, gateways, now);
      if (apply) {
        applied++;
        if (r.rule.domain !== domain) {
          if (domain !== "") this.metrics.reported(domain, admittedSum, rejectedSum);
          domain = r.rule.domain;
          admittedSum = 0;
          rejectedSum = 0;
        }
        admittedSum += e.admitted;
        rejectedSum += e.rejected;
      }
      keyPolicyRow(rows, i, p, this.dividedLimit(r, now), gateways, now);
      if (byString) rows.put(i, P_KEY_HANDLE, hit!.handle);
    }
    if (domain !== "") this.metrics.reported(domain, admittedSum, rejectedSum);
    // Nothing of it applied (every key refused: not owner, slice not ready...): a retry of this
    // seq is applied as new. Were it a duplicate, its counts would pass for applied and be lost.
    if (apply && applied === 0) this.engine.forgetReport(clientId, req.seq);
    this.metrics.report(count, !apply);
    const generation = this.ownership.generation();
    const tooOld = verdict === "too_old";
    // From the wire (the request came as columns): the answer keeps the rows for the encoder.
    if (cols !== undefined) {
      return new ReportAnswer(
        generation,
        rows,
        !apply,
        this.resolver.epoch,
        this.config.version,
        this.incarnation,
        tooOld,
      );
    }
    const policies: KeyPolicy[] = new Array(count);
    for (let i = 0; i < count; i++) policies[i] = rows.policy(i);
    return {
      generation,
      policies,
      duplicate: !apply,
      keyEpoch: this.resolver.epoch,
      configVersion: this.config.version,
      incarnation: this.incarnation,
      ...(tooOld ? { tooOld: true } : {}),
    };
  }

  /**
   * One string per client id: every report decodes its own copy, and a counter keeps the id of
   * the gateway reporting it. Kept as-is, each of a million counters held its own copy, made young
   * and copied into the old generation. Bounded: past the bound it starts over.
   */
  private internClientId(id: string): string {
    const known = this.clientIds.get(id);
    if (known !== undefined) return known;
    if (this.clientIds.size >= MAX_INTERNED_CLIENT_IDS) this.clientIds.clear();
    this.clientIds.set(id, id);
    return id;
  }

  /** Entries of domains the caller may not report for, by index, with their domain. */
  private deniedEntries(req: ReportRequest, caller: ReportCaller): Map<number, string> {
    const denied = new Map<number, string>();
    for (let i = 0; i < req.entries.length; i++) {
      const e = req.entries[i]!;
      const key =
        e.key !== "" || !e.keyHandle ? e.key : this.resolver.byHandle(req.keyEpoch, e.keyHandle)?.key;
      if (key === undefined) continue; // an unknown handle: answered UNKNOWN_KEY_HANDLE, nothing changed
      const domain = keyDomain(key);
      if (!caller.may(domain)) denied.set(i, domain);
    }
    if (denied.size > 0 && denied.size === req.entries.length) {
      const domains = [...new Set(denied.values())].slice(0, 5).map((d) => JSON.stringify(d));
      throw new PermissionDeniedError(reportRefusal(caller, domains.join(", ")));
    }
    return denied;
  }

  /**
   * One report entry's policy. Under a `fair_share` limit the gateway is held to its tenant's
   * limit and to its part of the group's as well (`bothPolicies`); a soft tenant over its own
   * limit takes the group's policy alone while the group has room to spare (ALLOW).
   */
  private reportKey(
    hit: CachedKey,
    r: Resolved,
    c: Counter,
    clientId: string,
    e: ReportEntryMsg,
    apply: boolean,
    interval: number,
    now: number,
    span: number,
  ): Policy {
    // Methods, not closures: this runs once per report entry, and four closures per entry were a
    // third of what batched ingest allocated.
    const parent = r.parent;
    if (parent === undefined) {
      const p = this.reportOn(r, c, r.counterKey, r.rule, r.subject, clientId, e, apply, interval, now, span);
      return this.pooled(r, c, this.counted(r, e, apply, 0, p), e, apply, interval, now, span);
    }
    const engine = this.engine;
    const own = this.reportOn(r, c, r.counterKey, r.rule, undefined, clientId, e, apply, interval, now, span);
    let g = hit.parentCounter;
    if (g === undefined || g.removed || g.algorithm !== parent.rule.algorithm) {
      g = engine.counterFor(parent.counterKey, parent.rule, now, parent.shardKey);
      hit.parentCounter = g;
    }
    const group = this.reportOn(
      r,
      g,
      parent.counterKey,
      parent.rule,
      parent.subject ?? NO_SUBJECT,
      clientId,
      e,
      apply,
      interval,
      now,
      span,
    );
    if (r.rule.soft && group.kind === PolicyKind.ALLOW) {
      // Borrowing the group's idle capacity: what went past the tenant's own limit was counted
      // on the group's, and is not owed on the tenant's once the group fills.
      const borrowed = engine.forgive(c, r.rule, now);
      return this.pooled(r, c, this.counted(r, e, apply, borrowed, group), e, apply, interval, now, span);
    }
    return this.pooled(
      r,
      c,
      this.counted(r, e, apply, 0, bothPolicies(own, group)),
      e,
      apply,
      interval,
      now,
      span,
    );
  }

  /** A tenant's or class's admitted, borrowed and rejected units, when applied. */
  private counted(r: Resolved, e: ReportEntryMsg, apply: boolean, borrowed: number, p: Policy): Policy {
    const subject = r.parent?.subject ?? r.subject;
    if (apply && (subject !== undefined || r.rank !== undefined)) {
      const domain = r.rule.domain;
      const id = subject?.id ?? "";
      const priority = PRIORITIES[r.rank ?? DEFAULT_RANK]!;
      this.metrics.tenant(domain, id, priority, "admitted", e.admitted - borrowed);
      this.metrics.tenant(domain, id, priority, "borrowed", borrowed);
      this.metrics.tenant(domain, id, priority, "rejected", e.rejected);
    }
    return p;
  }

  /**
   * One counter's report. A counter divided by class or tenant takes every report through its
   * class table: one sender reporting without a class still counts, as `normal`. A concurrency
   * limit counts holds, which are not divided: a priority entry on its key changes nothing.
   */
  private reportOn(
    r: Resolved,
    counter: Counter,
    key: string,
    configured: LimitRule,
    tenant: { id: string; weight: number } | undefined,
    clientId: string,
    e: ReportEntryMsg,
    apply: boolean,
    interval: number,
    now: number,
    span: number,
  ): Policy {
    const rule = configured.global === true ? this.regionShare(key, configured, e, apply, now) : configured;
    const divided =
      rule.algorithm !== "concurrency" &&
      (tenant !== undefined ||
        r.rank !== undefined ||
        counter.classes !== undefined ||
        rule.reserve !== undefined);
    return divided
      ? this.engine.reportShared(
          counter,
          key,
          rule,
          r.rank ?? DEFAULT_RANK,
          tenant?.id ?? "",
          tenant?.weight ?? 1,
          clientId,
          e,
          apply,
          interval,
          now,
          span,
        )
      : this.engine.reportOn(counter, key, rule, clientId, e, apply, interval, now, span);
  }

  /** The policy with the key's pool applied (none: as it is); what was lent is forgiven on `c`. */
  private pooled(
    r: Resolved,
    c: Counter,
    p: Policy,
    e: ReportEntryMsg,
    apply: boolean,
    interval: number,
    now: number,
    span: number,
  ): Policy {
    if (this.pools.poolOf(r) === undefined) return p;
    const gateways = c.clients?.size ?? 1;
    const out = this.pools.policy(r, r.rank, p, e, apply, gateways, interval, span, now);
    // Served from idle capacity: what went past the quota on a loan is not owed on it (as for soft).
    if (out.lent > 0) this.engine.forgive(c, r.rule, now, out.lent);
    return out.policy;
  }

  /**
   * The limit a policy says it divides: the configured one, or for a global limit this region's
   * share of it (what a gateway that loses this owner divides among the region's gateways).
   */
  private dividedLimit(r: Resolved, now: number): number {
    if (r.rule.unlimited) return 0;
    const g = r.rule.global === true ? this.global : undefined;
    return g === undefined ? r.rule.limit : g.ruleFor(r.counterKey, r.rule, now).limit;
  }

  /**
   * A global limit's counter in this region: what the gateway reported goes on to the global tier
   * (when applied), and the region's share of the limit is what is divided among its gateways.
   */
  private regionShare(
    key: string,
    rule: LimitRule,
    e: ReportEntryMsg,
    apply: boolean,
    now: number,
  ): LimitRule {
    const g = this.global;
    if (g === undefined) return rule;
    if (apply) g.reported(key, rule, Math.max(0, e.admitted - (e.refunded ?? 0)), e.rejected);
    return g.ruleFor(key, rule, now);
  }

  /** Remembers a gateway's policy for `inspect`, and a restrictive one's reason in words. */
  private notePolicy(
    r: Resolved,
    clientId: string,
    p: Policy,
    e: ReportEntryMsg,
    span: number,
    gateways: number,
    now: number,
  ): void {
    this.why.policy(r.counterKey, clientId, p.kind, p.units, p.fraction, now);
    if (p.kind !== PolicyKind.REJECT_UNTIL && p.kind !== PolicyKind.REJECT_FRACTION) return;
    const tenant = (r.parent?.subject ?? r.subject)?.id;
    const figures = {
      units: p.units,
      fraction: p.fraction,
      remaining: p.remaining,
      resetMs: ms(p.resetAt - now),
    };
    const demand = ((e.admitted + e.rejected) / span) * 1000;
    this.why.reject(r.counterKey, policyRejectKind(p.kind, tenant, r.rank), clientId, now, () =>
      explainPolicy(r.rule, clientId, p.kind, figures, demand, gateways, tenant, r.rank),
    );
  }

  /**
   * What this server knows about `key` (`shardlimit inspect`): its rule, owner, counter, the
   * gateways reporting it and the last rejections. Throws InvalidArgumentError for a bad key.
   */
  inspect(key: string): Inspection {
    const bad = keyProblem(key, this.limits);
    if (bad !== undefined) throw new InvalidArgumentError(`inspect: ${bad}`);
    const r = this.resolver.resolve(key);
    if (typeof r === "string")
      throw new InvalidArgumentError(`inspect: ${r}: ${JSON.stringify(key.slice(0, 100))}`);
    return inspect(
      { engine: this.engine, ownership: this.ownership, why: this.why },
      key,
      r,
      this.clock.now(),
    );
  }

  /** Records (and, when asked, explains) a rejected Check item. */
  private rejected(
    out: CheckResult,
    r: Resolved,
    d: Decision,
    cost: number,
    explain: boolean,
    now: number,
  ): void {
    const text = this.why.decided(r, d, cost, out.retryMs ?? 0, now, explain);
    if (text !== undefined) out.explanation = text;
  }

  /** A Check item this server may not decide: remembered under its key, explained when asked. */
  private notDecided(out: CheckResult, key: string, explain: boolean, now: number): void {
    const e = out.error;
    if (e === undefined || (e.code !== ErrorCode.NOT_OWNER && e.code !== ErrorCode.SLICE_NOT_READY)) return;
    const r = this.resolver.resolve(key);
    const text = `not owner: ${e.message}`;
    if (typeof r === "object") this.why.reject(r.counterKey, "not_owner", "", now, () => text);
    if (explain) out.explanation = text;
  }

  getLimits(req: LimitsRequest): Limits {
    const config = this.config;
    if (req.knownVersion === config.version) return { version: config.version, sources: [], unchanged: true };
    return {
      version: config.version,
      sources: config.sources.map((s) => ({ file: s.file, text: s.text })),
      unchanged: false,
      ...(config.mergeDomains ? { mergeDomains: true } : {}),
    };
  }

  private unknownHandle(epoch: number, handle: number): ItemError {
    return itemError(
      ErrorCode.UNKNOWN_KEY_HANDLE,
      `key handle ${handle} of key epoch ${epoch} is not known here (epoch ${this.resolver.epoch}): send the key`,
    );
  }

  private failItem<T extends { error?: ItemError }>(api: string, error: ItemError): T {
    this.metrics.itemError(api, errorName(error.code));
    return { error } as T;
  }

  check(req: CheckRequest): CheckResponse {
    if (req.items.length === 0) throw new InvalidArgumentError("check has no items");
    checkBatch(this.limits, "check", req.items.length);
    const ticketsFull = this.tickets.admit(req);
    const now = this.clock.now();
    const results: CheckResult[] = new Array(req.items.length);
    const scratch = this.checkScratch.cleared();
    const { items, positions, rules, starts, counts, costs, ranks, noLimit } = scratch;
    let invalid = 0;
    for (let i = 0; i < req.items.length; i++) {
      const it = req.items[i]!;
      const cost = it.cost === 0 ? 1 : it.cost;
      const bad = amountProblem("cost", cost, this.limits);
      if (bad !== undefined) {
        results[i] = this.failItem("check", itemError(ErrorCode.INVALID_AMOUNT, bad));
        invalid++;
        continue;
      }
      if (it.ticket === true && ticketsFull !== undefined) {
        results[i] = this.failItem("check", ticketsFull);
        invalid++;
        continue;
      }
      const rank = rankOfPriority(it.priority);
      if (rank === undefined) {
        results[i] = this.failItem(
          "check",
          itemError(ErrorCode.INVALID_PRIORITY, `priority ${it.priority} is not one of the Priority values`),
        );
        invalid++;
        continue;
      }
      const r = this.route(it.key, req.generation);
      if (r === undefined) {
        results[i] = { allowed: true };
        noLimit.push(i);
        continue;
      }
      if ("code" in r) {
        results[i] = this.failItem("check", r);
        this.notDecided(results[i]!, it.key, req.explain === true, now);
        invalid++;
        continue;
      }
      if (r.rule.algorithm === "concurrency") {
        results[i] = this.failItem(
          "check",
          itemError(
            ErrorCode.WRONG_ALGORITHM,
            `${r.rule.id} is a concurrency limit: use Acquire and Release`,
          ),
        );
        invalid++;
        continue;
      }
      // The class from the item's field, else from a `priority` entry in its key.
      const explicit = rank === DEFAULT_RANK ? r.rank : rank;
      if (this.pools.shed(r, explicit, cost, now)) {
        // The pool is over its target: shed by class before any quota is charged.
        results[i] = { allowed: false, limit: r.rule.unlimited ? 0 : r.rule.limit, rule: r.rule.id };
        this.metrics.decision("check", r.rule.domain, "over_limit");
        invalid++;
        continue;
      }
      starts.push(items.length);
      counts.push(addCharges(items, r, cost, explicit, i));
      ranks.push(explicit);
      costs.push(cost);
      positions.push(i);
      rules.push(r);
    }
    // All together or none: an item that failed validation fails the whole atomic check (an item
    // no limit applies to does not).
    const atomicFailed = req.atomic && invalid > 0;
    // Global limits: charged at this region's share, and passed on to the global tier.
    const global = chargeShares(this.global, items, now);
    let decisions: Decision[];
    try {
      decisions = atomicFailed ? [] : this.engine.checkMany(items, now, req.atomic ? "atomic" : "strict");
      reportCharged(this.global, items, global, decisions);
    } catch (err) {
      if (!(err instanceof CapacityError)) throw err;
      const e = itemError(ErrorCode.COUNTERS_EXHAUSTED, err.message);
      for (const i of positions) results[i] = this.failItem("check", e);
      return { generation: this.ownership.generation(), results };
    }
    for (let j = 0; j < positions.length; j++) {
      if (decisions.length === 0) {
        const r = rules[j]!;
        results[positions[j]!] = { allowed: false, limit: r.rule.limit, rule: r.rule.id };
        if (req.explain) {
          results[positions[j]!]!.explanation =
            "rejected together: another item of this atomic check was invalid, so none was decided";
        }
        continue;
      }
      const joint = joined(decisions, starts[j]!, counts[j]!, rules[j]!, costs[j]!);
      const { resolved: r } = joint;
      let d = joint.decision;
      // Refused by its quota while the pool is idle: served from the idle capacity, uncharged.
      if (!d.allowed && !req.atomic && this.pools.lend(rules[j]!, costs[j]!, now))
        d = { ...d, allowed: true };
      results[positions[j]!] = this.result(r, d, now);
      if (!d.allowed) this.rejected(results[positions[j]!]!, r, d, costs[j]!, req.explain === true, now);
      countTenant(this.metrics, rules[j]!, ranks[j], d.allowed, joint.borrowed, costs[j]!);
      this.metrics.decision(
        "check",
        r.rule.domain,
        d.shadowed ? "shadow_over_limit" : d.allowed ? "ok" : "over_limit",
      );
    }
    if (req.atomic && (atomicFailed || decisions.some((d) => !d.allowed))) {
      for (const i of noLimit) results[i] = { allowed: false };
    }
    this.tickets.issue(req, results, scratch);
    return { generation: this.ownership.generation(), results };
  }

  private result(r: Resolved, d: Decision, now: number): CheckResult {
    return {
      allowed: d.allowed,
      shadowed: d.shadowed,
      remaining: Number.isFinite(d.remaining) ? d.remaining : 0,
      limit: r.rule.unlimited ? 0 : r.rule.limit,
      resetMs: ms(d.resetAt - now),
      retryMs: d.allowed || !Number.isFinite(d.retryAt) ? 0 : Math.max(1, ms(d.retryAt - now)),
      rule: r.rule.id,
    };
  }

  /** Resolves a single-key request's key to a rule of `algorithm`-kind, or an error. */
  private single(
    key: string,
    asked: number,
    wantConcurrency: boolean,
    api: string,
  ): Resolved | undefined | ItemError {
    const r = this.route(key, asked);
    if (r === undefined || "code" in r) return r;
    if ((r.rule.algorithm === "concurrency") !== wantConcurrency) {
      return itemError(
        ErrorCode.WRONG_ALGORITHM,
        wantConcurrency
          ? `${r.rule.id} is a ${r.rule.algorithm} limit, not a concurrency limit: use Check`
          : `${r.rule.id} is a concurrency limit: ${api} does not apply`,
      );
    }
    return r;
  }

  /**
   * `caller` (under an authorisation file): the identity taking the lease, recorded; a lease id
   * another identity holds is refused (PERMISSION_DENIED), not renewed.
   */
  acquire(req: AcquireRequest, caller?: string): AcquireResponse {
    checkId(this.limits, "lease_id", req.leaseId);
    const generation = this.ownership.generation();
    const amount = req.amount === 0 ? 1 : req.amount;
    const bad =
      amountProblem("amount", amount, this.limits) ??
      (req.timeoutMs > this.limits.maxLeaseTimeoutMs
        ? `timeout_ms ${req.timeoutMs} exceeds the maximum of ${this.limits.maxLeaseTimeoutMs}`
        : undefined);
    if (bad !== undefined) return { error: itemError(ErrorCode.INVALID_AMOUNT, bad), generation };
    const r = this.single(req.key, req.generation, true, "Acquire");
    if (r === undefined) return { allowed: true, generation };
    if ("code" in r) return { error: r, generation };
    const now = this.clock.now();
    const refused = this.notTaker(r.counterKey, req.leaseId, caller, now, "acquire");
    if (refused !== undefined) return { error: refused, generation };
    try {
      const timeout = req.timeoutMs > 0 ? req.timeoutMs : r.rule.leaseTimeoutMs;
      const d = this.engine.acquire(
        r.counterKey,
        r.rule,
        req.leaseId,
        amount,
        now,
        timeout,
        r.shardKey,
        caller,
      );
      this.metrics.decision(
        "acquire",
        r.rule.domain,
        d.shadowed ? "shadow_over_limit" : d.allowed ? "ok" : "over_limit",
      );
      return {
        allowed: d.allowed,
        shadowed: d.shadowed,
        remaining: Number.isFinite(d.remaining) ? d.remaining : 0,
        limit: r.rule.limit,
        rule: r.rule.id,
        generation,
      };
    } catch (err) {
      if (!(err instanceof CapacityError)) throw err;
      return { error: itemError(ErrorCode.COUNTERS_EXHAUSTED, err.message), generation };
    }
  }

  /** `caller`: as for `acquire`; only the identity that took a lease may release it. */
  release(req: ReleaseRequest, caller?: string): ReleaseResponse {
    checkId(this.limits, "lease_id", req.leaseId);
    const generation = this.ownership.generation();
    const r = this.single(req.key, req.generation, true, "Release");
    if (r === undefined) return { released: false, generation };
    if ("code" in r) return { error: r, generation };
    const now = this.clock.now();
    const refused = this.notTaker(r.counterKey, req.leaseId, caller, now, "release");
    if (refused !== undefined) return { error: refused, generation };
    return { released: this.engine.release(r.counterKey, req.leaseId, now), generation };
  }

  /** A lease held by an identity other than `caller` (undefined: no identities, or no such lease). */
  private notTaker(
    counterKey: string,
    leaseId: string,
    caller: string | undefined,
    now: number,
    what: string,
  ): ItemError | undefined {
    if (caller === undefined) return undefined;
    const taker = this.engine.leaseTaker(counterKey, leaseId, now);
    if (taker === undefined || taker === caller) return undefined;
    return itemError(
      ErrorCode.PERMISSION_DENIED,
      `lease ${JSON.stringify(leaseId.slice(0, 100))} was taken by another identity; ${JSON.stringify(caller)} may not ${what} it`,
    );
  }

  settle(req: SettleRequest): SettleResponse {
    if (req.ticketId) return this.tickets.settle(req);
    const generation = this.ownership.generation();
    if (!Number.isFinite(req.delta) || Math.abs(req.delta) > this.limits.maxAmount) {
      return {
        error: itemError(
          ErrorCode.INVALID_AMOUNT,
          `delta ${req.delta} is not within ±${this.limits.maxAmount}`,
        ),
        generation,
      };
    }
    const r = this.single(req.key, req.generation, false, "Settle");
    if (r === undefined) return { generation };
    if ("code" in r) return { error: r, generation };
    const now = this.clock.now();
    try {
      const d = this.engine.adjust(r.counterKey, r.rule, req.delta, now, r.shardKey);
      return { remaining: d.remaining, limit: r.rule.limit, resetMs: ms(d.resetAt - now), generation };
    } catch (err) {
      if (!(err instanceof CapacityError)) throw err;
      return { error: itemError(ErrorCode.COUNTERS_EXHAUSTED, err.message), generation };
    }
  }

  clusterView(): ClusterView {
    return this.ownership.view();
  }

  /** A pool backend's utilisation, at the owner of the pool's key (issue 14; server/pools.ts). */
  reportPool(req: PoolReportRequest): PoolReportResponse {
    return this.pools.report(req, this.clock.now());
  }

  /**
   * The counter keys `req`'s items charge (a fair-share item its group's too), each once, for the
   * queues of waiting checks (check-waits.ts); undefined when an item cannot be decided here
   * (invalid, not owned, a concurrency limit): such a request is answered at once.
   */
  counterKeys(req: CheckRequest): string[] | undefined {
    const keys = new Set<string>();
    for (const it of req.items) {
      const r = this.route(it.key, req.generation);
      if (r === undefined) continue;
      if ("code" in r || r.rule.algorithm === "concurrency") return undefined;
      if (!r.rule.unlimited) keys.add(r.counterKey);
      if (r.parent !== undefined && !r.parent.rule.unlimited) keys.add(r.parent.counterKey);
    }
    return [...keys];
  }
}

const DEFAULT_RANK = PRIORITY_RANK.normal;
/** A fair-share group's counter when its key names no tenant of its own. */
const NO_SUBJECT = { id: "", weight: 1 };

/** The caller of a report under an authorisation file. */
export interface ReportCaller {
  readonly identity: string;
  may(domain: string): boolean;
}

function reportRefusal(caller: ReportCaller, domains: string): string {
  return `ReportAndGetPolicy refused for identity ${JSON.stringify(caller.identity)} for domain ${domains}`;
}

/**
 * The working arrays of `Limiter.check`, reused from call to call instead of eight new ones per
 * call (and their storage, grown on the first push): `check` runs to its end synchronously, and
 * nothing it hands them to keeps them (the engine, global shares and tickets read them and copy
 * what they keep).
 */
class CheckScratch {
  readonly items: CheckItem[] = [];
  readonly positions: number[] = [];
  readonly rules: Resolved[] = [];
  /** Per resolved item: where its engine items start and how many (a fair-share pair is 2). */
  readonly starts: number[] = [];
  readonly counts: number[] = [];
  readonly costs: number[] = [];
  readonly ranks: (number | undefined)[] = [];
  /** Items no limit applies to: allowed, unless an atomic check they are part of fails. */
  readonly noLimit: number[] = [];
  /** Emptied for a new call. */
  cleared(): this {
    emptied(this.items);
    emptied(this.positions);
    emptied(this.rules);
    emptied(this.starts);
    emptied(this.counts);
    emptied(this.costs);
    emptied(this.ranks);
    emptied(this.noLimit);
    return this;
  }
}

/**
 * Empties `a` keeping its storage: V8 drops an array's storage when its length is set to 0, so the
 * next push would allocate it again; popping to empty keeps it (a few items a call).
 */
function emptied(a: unknown[]): void {
  while (a.length > 0) a.pop();
}

/** Entry `i` of a decoded request, read into `into` (the Limiter's reused entry). */
function columnEntry(req: DecodedReport, i: number, into: ReportEntryMsg): ReportEntryMsg {
  const v = req.numbers;
  const o = i * ENTRY_NUMBERS;
  into.key = req.keys[i]!;
  into.keyHandle = v[o + AT_HANDLE]!;
  into.admitted = v[o + AT_ADMITTED]!;
  into.rejected = v[o + AT_REJECTED]!;
  into.held = v[o + AT_HELD]!;
  into.windowAdmitted = v[o + AT_WINDOW_ADMITTED]!;
  into.refunded = v[o + AT_REFUNDED]!;
  return into;
}
