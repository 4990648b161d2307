import type { LimitRule, Resolved } from "../config/types.js";
import type { Decision, RejectKind, RejectReason } from "../core/decision.js";
import { PolicyKind } from "../core/policy.js";
import { PRIORITIES, PRIORITY_RANK } from "../core/priority.js";

/**
 * "Why was this rejected": the engine's reasons (core/decision.ts `RejectReason`) in words, and a
 * bounded memory of the last rejections and gateway policies per counter key, read by `inspect`.
 */

/**
 * One remembered rejection. A run of rejections of the same kind for the same subject (tenant,
 * class, gateway) is one entry, counted, with the latest one's words.
 */
export interface Rejection {
  kind: RejectKind;
  text: string;
  /** Server clock ms of the first and the last of the run. */
  firstAt: number;
  lastAt: number;
  count: number;
}

interface Entry {
  kind: RejectKind;
  who: string;
  /** The words, made only when read: the rejection path stores figures, not text. */
  text: () => string;
  firstAt: number;
  lastAt: number;
  count: number;
}

/** The last policy a gateway was given for a key. */
export interface GatewayNote {
  /** `PolicyKind`. */
  kind: number;
  units: number;
  fraction: number;
  at: number;
}

interface KeyNotes {
  rejections: Entry[];
  gateways: Map<string, GatewayNote>;
}

export interface WhyLogOptions {
  /** Counter keys remembered; the least recently rejected beyond it are forgotten. */
  maxKeys?: number;
  /** Rejections remembered per key (a ring). */
  perKey?: number;
  /** Gateways remembered per key. */
  gatewaysPerKey?: number;
}

/**
 * Bounded: at most `maxKeys` keys (a key rejected again moves to the back; the front one goes
 * first), `perKey` rejections and `gatewaysPerKey` gateways each. No unbounded state.
 */
export class WhyLog {
  private readonly keys = new Map<string, KeyNotes>();
  private readonly maxKeys: number;
  private readonly perKey: number;
  private readonly gatewaysPerKey: number;

  constructor(opts: WhyLogOptions = {}) {
    this.maxKeys = opts.maxKeys ?? 1024;
    this.perKey = opts.perKey ?? 8;
    this.gatewaysPerKey = opts.gatewaysPerKey ?? 32;
  }

  get size(): number {
    return this.keys.size;
  }

  private notes(key: string): KeyNotes {
    let n = this.keys.get(key);
    if (n !== undefined) {
      this.keys.delete(key);
    } else {
      n = { rejections: [], gateways: new Map() };
      if (this.keys.size >= this.maxKeys) this.keys.delete(this.keys.keys().next().value!);
    }
    this.keys.set(key, n);
    return n;
  }

  /** A rejection of `key` of `kind` for `who` (a tenant, class or gateway; "" for none). */
  reject(key: string, kind: RejectKind, who: string, now: number, text: () => string): void {
    const list = this.notes(key).rejections;
    const last = list[list.length - 1];
    if (last !== undefined && last.kind === kind && last.who === who) {
      last.count++;
      last.lastAt = now;
      last.text = text;
      return;
    }
    list.push({ kind, who, text, firstAt: now, lastAt: now, count: 1 });
    if (list.length > this.perKey) list.shift();
  }

  /**
   * A rejected decision on `r` (Check, ShouldRateLimit): remembered as the engine's figures; its
   * words made now only when `explain` (and returned), else when read.
   */
  decided(
    r: Resolved,
    d: Decision,
    cost: number,
    retryMs: number,
    now: number,
    explain: boolean,
  ): string | undefined {
    const reason = d.reason ?? { kind: "over_limit" as const, cost };
    const who = `${reason.rank ?? ""}/${reason.subject ?? ""}`;
    if (!explain) {
      this.reject(r.counterKey, reason.kind, who, now, () => explainReason(r.rule, reason, retryMs));
      return undefined;
    }
    const text = explainReason(r.rule, reason, retryMs);
    this.reject(r.counterKey, reason.kind, who, now, () => text);
    return text;
  }

  /**
   * A gateway's policy for a key. A restrictive one is always noted; an ALLOW only updates a key
   * already noted (so the report path of unrestricted keys costs one map look-up).
   */
  policy(key: string, gateway: string, kind: number, units: number, fraction: number, now: number): void {
    // Nothing noted yet: an ALLOW has nothing to update (and the key's string is not touched).
    if (kind === PolicyKind.ALLOW && this.keys.size === 0) return;
    let n = this.keys.get(key);
    if (n === undefined) {
      if (kind === PolicyKind.ALLOW) return;
      n = this.notes(key);
    }
    const g = n.gateways;
    if (!g.has(gateway) && g.size >= this.gatewaysPerKey) g.delete(g.keys().next().value!);
    g.set(gateway, { kind, units, fraction, at: now });
  }

  rejections(key: string): Rejection[] {
    const list = this.keys.get(key)?.rejections ?? [];
    return list.map((e) => ({
      kind: e.kind,
      text: e.text(),
      firstAt: e.firstAt,
      lastAt: e.lastAt,
      count: e.count,
    }));
  }

  gateways(key: string): ReadonlyMap<string, GatewayNote> {
    return this.keys.get(key)?.gateways ?? new Map();
  }
}

const per = (n: number) => `${fmt(n)}/s`;

export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Number.isInteger(n) ? String(n) : n.toFixed(Math.abs(n) < 10 ? 2 : 1);
}

function windowText(rule: LimitRule): string {
  const w = rule.windowMs;
  return w % 1000 === 0 ? `${w / 1000} s` : `${w} ms`;
}

function classText(rank: number | undefined): string {
  if (rank === undefined) return "";
  return rank < 0 ? "borrowing (below every class)" : `class ${PRIORITIES[rank] ?? rank}`;
}

/** A synchronous decision's rejection in words, from the engine's figures. */
export function explainReason(rule: LimitRule, r: RejectReason, retryMs: number): string {
  const limit = `${rule.id} (${fmt(rule.limit)} per ${windowText(rule)}, ${rule.algorithm})`;
  const retry = retryMs > 0 ? `; room again in ${retryMs} ms` : "";
  const who = r.subject ? `tenant ${JSON.stringify(r.subject)}` : "the request";
  const cls = classText(r.rank);
  switch (r.kind) {
    case "over_limit":
      return r.available === undefined
        ? `over limit: ${limit} counted this hit of ${fmt(r.cost)} past its limit${retry}`
        : `over limit: ${limit} had ${fmt(Math.max(0, Math.floor(r.available)))} left, the request asked ${fmt(r.cost)}${retry}`;
    case "fair_share":
      return r.share !== undefined
        ? `fair share: ${who}${cls && r.rank !== PRIORITY_RANK.normal ? ` (${cls})` : ""} asks ${per(r.demand ?? 0)}, over its share of ${per(r.share)} of ${limit}, and is paced at its share${retry}`
        : `fair share: ${who} is over its share of ${limit}: ${fmt(r.kept ?? 0)} units are kept for the tenants within theirs${retry}`;
    case "priority":
      return r.share !== undefined
        ? `priority shedding: ${cls || "its class"} asks ${per(r.demand ?? 0)}, more than the ${per(r.share)} the classes above leave it of ${limit}${retry}`
        : `priority shedding: ${cls || "its class"}: ${limit} had ${fmt(Math.max(0, Math.floor(r.available ?? 0)))} left, but ${fmt(Math.ceil(r.kept ?? 0))} are kept for the classes above (reserve and expected demand)${retry}`;
    case "together":
      return `rejected together: this item fitted ${limit}, but an item it is decided with (atomic check, or its group's limit) did not`;
    case "not_owner":
      return "not owner: this server does not own the key";
    case "fallback":
      return "fallback: the gateway lost the key's owner and decides on its own share";
  }
}

/**
 * The kind of a restrictive batched-mode policy: REJECT_UNTIL is over limit; REJECT_FRACTION holds
 * the gateway to its share. Batched mode divides the supply by class first (highest first), then
 * by tenant, then among the gateways: a class without a tenant is held to what the classes above
 * leave it (priority), a tenant or a plain gateway to its fair share.
 */
export function policyRejectKind(
  kind: number,
  tenant: string | undefined,
  rank: number | undefined,
): RejectKind {
  if (kind === PolicyKind.REJECT_UNTIL) return "over_limit";
  return tenant === undefined && rank !== undefined ? "priority" : "fair_share";
}

/** A restrictive batched-mode policy (REJECT_UNTIL, REJECT_FRACTION) in words. */
export function explainPolicy(
  rule: LimitRule,
  gateway: string,
  kind: number,
  p: { units: number; fraction: number; remaining: number; resetMs: number },
  demandPerS: number,
  gateways: number,
  tenant: string | undefined,
  rank: number | undefined,
): string {
  const limit = `${rule.id} (${fmt(rule.limit)} per ${windowText(rule)})`;
  if (kind === PolicyKind.REJECT_UNTIL) {
    return `over limit: gateway ${gateway} told REJECT_UNTIL: ${limit} has ${fmt(p.remaining)} left until it refills in ${p.resetMs} ms`;
  }
  const whose = tenant
    ? `tenant ${JSON.stringify(tenant)}'s gateway ${gateway}`
    : rank !== undefined
      ? `gateway ${gateway} (${classText(rank)})`
      : `gateway ${gateway}`;
  const words = policyRejectKind(kind, tenant, rank) === "priority" ? "priority shedding" : "fair share";
  return `${words}: ${whose} asks ${per(demandPerS)}, over its share among ${gateways} gateway(s) of ${limit}: told REJECT_FRACTION ${fmt(p.fraction * 100)}% (at most ${fmt(p.units)} units)`;
}
