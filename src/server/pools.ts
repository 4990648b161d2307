import { type LimitConfig, poolShardKey, type Resolved } from "../config/types.js";
import { POLICY_LIFETIME_INTERVALS, type Policy, PolicyKind } from "../core/policy.js";
import {
  DEFAULT_POOL_GAINS,
  MAX_BACKEND_ID,
  MAX_BACKENDS,
  Pool,
  type PoolGains,
  type PoolSnapshot,
  type PoolTransfer,
} from "../core/pool.js";
import { PRIORITY_RANK } from "../core/priority.js";
import { keyPoint } from "../keyspace/hash.js";
import { amountProblem, type InputLimits } from "../protocol/input-limits.js";
import { ErrorCode, itemError } from "../protocol/item-errors.js";
import type { PoolReportRequest, PoolReportResponse, ReportEntryMsg } from "../protocol/messages.js";
import type { Ownership } from "./ownership.js";

/**
 * A server's pools (issue 14): the state of each pool whose key (`pool/<name>`) this server owns,
 * and the three modes applied to the limits attached to it. Every limit of a pool is placed by
 * the pool's key (config/match.ts), so the owner that decides a request also holds its pool:
 * - `shed`: before a request is charged, the pool's per-class fraction may reject it (overloaded);
 * - `lend`: a request its quota refused may be served from idle capacity (idle);
 * - `policy`: a batched gateway's policy with both folded in.
 * Backends report utilisation with `report` (the ReportPool RPC).
 */

export class PoolDesk {
  private readonly pools = new Map<string, Pool>();

  constructor(
    config: LimitConfig,
    private readonly ownership: Ownership,
    private readonly limits: InputLimits,
    private readonly gains: PoolGains = DEFAULT_POOL_GAINS,
  ) {
    this.setConfig(config);
  }

  /** A reload: new pools start fresh, kept ones keep their controller, removed ones are dropped. */
  setConfig(config: LimitConfig): void {
    const defined = new Set<string>();
    for (const s of config.pools ?? []) {
      defined.add(s.name);
      const pool = this.pools.get(s.name);
      if (pool === undefined) this.pools.set(s.name, new Pool(s, this.gains));
      else pool.configure(s);
    }
    for (const name of this.pools.keys()) {
      if (!defined.has(name)) this.pools.delete(name);
    }
  }

  /** The pool a resolved request is attached to (its own rule's, else its fair-share group's). */
  poolOf(r: Resolved): Pool | undefined {
    const s = r.rule.pool ?? r.parent?.rule.pool;
    return s === undefined ? undefined : this.pools.get(s.name);
  }

  /** Whether the pool sheds this request (counted as offered either way). */
  shed(r: Resolved, rank: number | undefined, cost: number, now: number): boolean {
    const pool = this.poolOf(r);
    return pool?.shed(rank ?? PRIORITY_RANK.normal, cost, now) ?? false;
  }

  /** Whether a request its quota refused is served from the pool's idle capacity. */
  lend(r: Resolved, cost: number, now: number): boolean {
    const pool = this.poolOf(r);
    return pool?.borrow(subjectOf(r), cost, now) ?? false;
  }

  /**
   * A batched gateway's policy for a key attached to a pool: its offered units counted by class;
   * while overloaded, its class's fraction rejected on top of the quota's policy; while idle, a
   * quota that holds it back is widened by its share of the idle capacity (split among the key's
   * gateways). Returns the units this report brought on a loan (the gateway's part of the
   * subject's latest share over the report's span): the caller forgives them on the quota, as
   * for `soft`, and no more, so the quota's own debt still paces it.
   */
  policy(
    r: Resolved,
    rank: number | undefined,
    p: Policy,
    e: ReportEntryMsg,
    apply: boolean,
    gateways: number,
    interval: number,
    span: number,
    now: number,
  ): { policy: Policy; lent: number } {
    const pool = this.poolOf(r);
    if (pool === undefined) return { policy: p, lent: 0 };
    const cls = rank ?? PRIORITY_RANK.normal;
    if (apply) pool.offer(cls, e.admitted + e.rejected, now);
    else pool.maybeStep(now);
    const f = pool.fractions[cls]!;
    const subject = subjectOf(r);
    const held = p.kind !== PolicyKind.ALLOW && f <= 0;
    // Its whole offered demand: what it had rejected shrinks as the loan grows, so counting only
    // that would take the loan back the next round.
    if (apply && held) pool.demand(subject, e.admitted + e.rejected, now);
    const loan = pool.shareOf(subject, now);
    const { share, demand } = loan;
    const lent = apply ? (loan.lent / Math.max(1, gateways)) * span : 0;
    if (f > 0) return { policy: shedPolicy(p, f, now), lent };
    if (!held || share <= 0 || demand <= 0) return { policy: p, lent };
    const latest = now + POLICY_LIFETIME_INTERVALS * interval;
    const perInterval = (share / Math.max(1, gateways)) * interval;
    return { policy: lendPolicy(p, share / demand, perInterval, latest), lent };
  }

  /** A backend's utilisation, at the owner of the pool's key. Bad input changes nothing. */
  report(req: PoolReportRequest, now: number): PoolReportResponse {
    const generation = this.ownership.generation();
    const fail = (code: ErrorCode, message: string): PoolReportResponse => ({
      generation,
      error: itemError(code, message),
    });
    const pool = this.pools.get(req.pool);
    if (pool === undefined) {
      const known = [...this.pools.keys()].map((n) => JSON.stringify(n)).join(", ") || "none";
      return fail(
        ErrorCode.INVALID_KEY,
        `no pool named ${JSON.stringify(req.pool.slice(0, 100))} (pools: ${known})`,
      );
    }
    if (req.backend === "" || req.backend.length > MAX_BACKEND_ID) {
      return fail(
        ErrorCode.INVALID_KEY,
        `backend must be 1-${MAX_BACKEND_ID} characters, got ${req.backend.length}`,
      );
    }
    if (!Number.isFinite(req.utilisation) || req.utilisation < 0 || req.utilisation > 1) {
      return fail(ErrorCode.INVALID_AMOUNT, `utilisation must be within [0, 1], got ${req.utilisation}`);
    }
    const badCapacity =
      req.capacity > 0
        ? amountProblem("capacity", req.capacity, this.limits)
        : `capacity must be above 0, got ${req.capacity}`;
    if (badCapacity !== undefined) return fail(ErrorCode.INVALID_AMOUNT, badCapacity);
    if (req.generation > generation) {
      return fail(
        ErrorCode.NOT_OWNER,
        `this server has not confirmed generation ${req.generation} yet (it serves generation ${generation})`,
      );
    }
    const verdict = this.ownership.check(poolShardKey(req.pool));
    if (verdict !== "own") {
      return fail(
        verdict === "not_owner" ? ErrorCode.NOT_OWNER : ErrorCode.SLICE_NOT_READY,
        `${verdict === "not_owner" ? "not the owner" : "the slice is being handed over"} of pool ${req.pool} in generation ${generation}`,
      );
    }
    if (!pool.report(req.backend, req.utilisation, req.capacity, now)) {
      return fail(
        ErrorCode.COUNTERS_EXHAUSTED,
        `pool ${req.pool} already tracks ${MAX_BACKENDS} live backends`,
      );
    }
    const s = pool.snapshot();
    return { generation, mode: s.mode, level: s.level, fractions: s.fractions, utilisation: s.utilisation };
  }

  /**
   * Handoff, sending side: the state of each pool whose key's point is in `ranges` (pools with
   * no live backend carry nothing), taken out: the key moved away.
   */
  take(ranges: readonly { start: number; end: number }[], now: number): PoolTransfer[] {
    const out: PoolTransfer[] = [];
    for (const pool of this.pools.values()) {
      const point = keyPoint(poolShardKey(pool.name));
      if (!ranges.some((r) => point >= r.start && point < r.end)) continue;
      const t = pool.take(now);
      if (t.backends.length > 0) out.push(t);
    }
    return out;
  }

  /** Handoff, receiving side: a checked pool state into the pool of that name; false if none is defined here. */
  put(t: PoolTransfer, now: number): boolean {
    const pool = this.pools.get(t.name);
    if (pool === undefined) return false;
    pool.put(t, now);
    return true;
  }

  /** Every pool this server holds state for (the ones whose key it owns show backends). */
  snapshots(now: number): PoolSnapshot[] {
    const out: PoolSnapshot[] = [];
    for (const pool of this.pools.values()) {
      pool.maybeStep(now);
      out.push(pool.snapshot());
    }
    return out;
  }
}

/** Who borrows idle capacity: a fair-share tenant, else the counter (one per descriptor value). */
function subjectOf(r: Resolved): string {
  return r.subject?.id !== undefined
    ? `${r.parent?.counterKey ?? r.counterKey}#${r.subject.id}`
    : r.counterKey;
}

/** The quota's policy with fraction `f` of the requests shed on top (all of them at 1). */
function shedPolicy(p: Policy, f: number, now: number): Policy {
  if (f >= 1) {
    return {
      ...p,
      kind: PolicyKind.REJECT_UNTIL,
      units: 0,
      fraction: 0,
      until: Math.min(p.until, now + 1000),
    };
  }
  if (p.kind === PolicyKind.REJECT_UNTIL) return p;
  const fraction = 1 - (1 - p.fraction) * (1 - f);
  // An ALLOW has no cap; the fraction alone sheds.
  const units = p.kind === PolicyKind.ALLOW ? Number.MAX_SAFE_INTEGER : p.units;
  return { ...p, kind: PolicyKind.REJECT_FRACTION, fraction, units };
}

/**
 * The quota's policy widened by a loan: the subject's share of the idle capacity is `part` of
 * its demand, so the rejected fraction shrinks by `part` (the gateway paces by the fraction, as
 * every gateway of the subject does), and the cap, like the quota's own grants one report
 * interval's worth and renewed with each report, grows by this gateway's part of the share over
 * an interval (`extra` units). The loan lasts at most until `latest`.
 */
function lendPolicy(p: Policy, part: number, extra: number, latest: number): Policy {
  const until = p.kind === PolicyKind.REJECT_UNTIL ? latest : Math.min(p.until, latest);
  if (p.kind === PolicyKind.GRANT) return { ...p, units: p.units + extra, until };
  const base = p.kind === PolicyKind.REJECT_UNTIL ? 1 : p.fraction;
  return {
    ...p,
    kind: PolicyKind.REJECT_FRACTION,
    units: (p.kind === PolicyKind.REJECT_UNTIL ? 0 : p.units) + extra,
    fraction: Math.max(0, base - part),
    until,
  };
}
