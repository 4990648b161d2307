import { type LimitConfig, poolShardKey, type Resolved } from "../config/types.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import { DEFAULT_POOL_GAINS, MAX_BACKENDS, Pool, type PoolGains, type PoolSnapshot } from "../core/pool.js";
import { PRIORITY_RANK } from "../core/priority.js";
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
 * Backends report utilisation with `report` (the PoolReport RPC).
 */

/** Backend ids are kept in memory per pool: bounded. */
const MAX_BACKEND_ID = 256;

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
   * gateways). Returns whether it lent, so the caller forgives the quota's debt as for `soft`.
   */
  policy(
    r: Resolved,
    rank: number | undefined,
    p: Policy,
    e: ReportEntryMsg,
    apply: boolean,
    gateways: number,
    span: number,
    now: number,
  ): { policy: Policy; lent: boolean } {
    const pool = this.poolOf(r);
    if (pool === undefined) return { policy: p, lent: false };
    const cls = rank ?? PRIORITY_RANK.normal;
    if (apply) pool.offer(cls, e.admitted + e.rejected, now);
    else pool.maybeStep(now);
    const f = pool.fractions[cls]!;
    if (f > 0) return { policy: shedPolicy(p, f, now), lent: false };
    if (p.kind === PolicyKind.ALLOW) return { policy: p, lent: false };
    const subject = subjectOf(r);
    if (apply) pool.demand(subject, e.rejected, now);
    const share = pool.shareOf(subject, now) / Math.max(1, gateways);
    if (share <= 0) return { policy: p, lent: false };
    const demand = (e.admitted + e.rejected) / Math.max(1, span);
    return { policy: lendPolicy(p, share, demand, now), lent: true };
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
 * The quota's policy widened by `share` units per ms of idle capacity for a gateway offering
 * `demand` units per ms: its cap grows by the share over the policy's life, its rejected
 * fraction shrinks by the share's part of the demand.
 */
function lendPolicy(p: Policy, share: number, demand: number, now: number): Policy {
  const until = p.kind === PolicyKind.REJECT_UNTIL ? now + 300 : p.until;
  const extra = Math.max(1, Math.floor(share * (until - now)));
  const fraction =
    p.kind === PolicyKind.GRANT
      ? 0
      : Math.max(
          0,
          (p.kind === PolicyKind.REJECT_UNTIL ? 1 : p.fraction) - (demand > 0 ? share / demand : 1),
        );
  return {
    ...p,
    kind: fraction > 0 ? PolicyKind.REJECT_FRACTION : PolicyKind.GRANT,
    units: (p.kind === PolicyKind.REJECT_UNTIL ? 0 : p.units) + extra,
    fraction,
    until,
  };
}
