import { type DescriptorEntry, type LimitRule, type Resolved, UNIT_PROTO } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import type { CheckItem, Decision } from "../core/decision.js";
import type { Engine } from "../core/engine.js";
import { NotOwnerError } from "../core/errors.js";
import type { InputLimits } from "../protocol/input-limits.js";
import {
  EnvoyCode,
  type EnvoyDescriptorStatus,
  type EnvoyRequest,
  type EnvoyResponse,
} from "../protocol/messages.js";
import { addCharges, countTenant, joined } from "./charges.js";
import type { EnvoyOptions } from "./envoy-options.js";
import { type EnvoyPlan, type PlanContext, planEnvoy, respondEnvoy } from "./envoy-plan.js";
import type { DescriptorMetrics } from "./envoy-stats.js";
import { chargeShares, type GlobalShares, reportCharged } from "./global-shares.js";
import type { LimiterMetrics } from "./metrics.js";
import type { Ownership } from "./ownership.js";
import type { PoolDesk } from "./pools.js";
import type { WhyLog } from "./why.js";

export interface EnvoyDeps {
  engine: Engine;
  clock: Clock;
  ownership: Ownership;
  limits: InputLimits;
  metrics: LimiterMetrics;
  /** envoyproxy/ratelimit's server options; its defaults when absent. */
  options?: EnvoyOptions;
  /** Per-limit statistics, named by `metricKey`; none when absent. */
  descriptorMetrics?: DescriptorMetrics;
  metricKey?: (domain: string, entries: readonly DescriptorEntry[]) => string | undefined;
  /** This region's shares of `global: true` limits (`serve --global-tier`). */
  global?: GlobalShares;
  /** Pools of backends (issue 14): the Limiter's, so both services shed and lend alike. */
  pools?: PoolDesk;
  /** Where rejections are remembered for `inspect` (the Limiter's). */
  why?: WhyLog;
}

/**
 * `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` with envoyproxy/ratelimit's
 * semantics: every descriptor is resolved against the config (most specific match wins), each
 * matched limit is charged `hits_addend` (fixed windows count every hit, admitted or not), and the
 * request is OVER_LIMIT if any descriptor is. Unknown domains and unmatched descriptors are OK
 * with no `current_limit`.
 */
export class EnvoyRateLimit {
  constructor(
    private readonly deps: EnvoyDeps,
    private readonly resolve: (domain: string, entries: readonly DescriptorEntry[]) => Resolved | undefined,
    /** Whether the config defines `domain`: a limit override in an unknown domain is ignored. */
    private readonly knownDomain: (domain: string) => boolean,
  ) {}

  /**
   * `forwarded`: a part another server forwarded, which shapes the answer itself from the
   * statuses (headers, metadata, quota and shadow mode): none of that is computed or sent here.
   */
  shouldRateLimit(req: EnvoyRequest, forwarded = false): EnvoyResponse {
    const plan = this.plan(req);
    for (const i of plan.limited) {
      const r = plan.active[i]!;
      if (this.deps.ownership.check(r.shardKey) !== "own") {
        throw new NotOwnerError(
          `descriptor ${i}: this server does not serve ${r.counterKey} in generation ${this.deps.ownership.generation()}`,
          this.deps.ownership.generation(),
        );
      }
    }
    const statuses = this.execute(plan, plan.limited);
    return forwarded ? respondEnvoy(plan, statuses, this.deps.metrics) : this.respond(plan, statuses);
  }

  /** See planEnvoy. */
  plan(req: EnvoyRequest): EnvoyPlan {
    this.planContext ??= { limits: this.deps.limits, resolve: this.resolve, knownDomain: this.knownDomain };
    return planEnvoy(req, this.planContext);
  }
  /** planEnvoy's context, made once. */
  private planContext: PlanContext | undefined;

  /** Charges the descriptors at `indices` (limited ones of `plan`) here; their statuses, in order. */
  execute(plan: EnvoyPlan, indices: readonly number[]): EnvoyDescriptorStatus[] {
    const { engine, clock, metrics } = this.deps;
    const now = clock.now();
    const pools = this.deps.pools;
    const items: CheckItem[] = [];
    const starts: number[] = new Array(indices.length);
    const counts: number[] = new Array(indices.length);
    /**
     * Descriptors a pool over its target shed before any quota is charged (issue 14); made on the
     * first one shed.
     */
    let shed: boolean[] | undefined;
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j]!;
      starts[j] = items.length;
      const off = pools?.shed(plan.active[i]!, plan.ranks?.[i], plan.hits[i]!, now) ?? false;
      if (off) {
        shed ??= new Array(indices.length).fill(false);
        shed[j] = true;
      }
      counts[j] = off ? 0 : addCharges(items, plan.active[i]!, plan.hits[i]!, plan.ranks?.[i], j);
    }
    if (this.deps.options?.stopChargingWhenOverLimit && indices.length > 1) {
      chargeOnlyOverLimit(engine, items, starts, counts, now);
    }
    const global = chargeShares(this.deps.global, items, now);
    const decisions = engine.checkMany(items, now, "envoy");
    reportCharged(this.deps.global, items, global, decisions);
    const out: EnvoyDescriptorStatus[] = new Array(indices.length);
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j]!;
      if (shed?.[j]) {
        const rule = plan.active[i]!.rule;
        out[j] = {
          code: EnvoyCode.OVER_LIMIT,
          currentLimit: { name: rule.name ?? "", requestsPerUnit: rule.limit, unit: UNIT_PROTO[rule.unit] },
          limitRemaining: 0,
          durationUntilReset: { seconds: 0, nanos: 0 },
        };
        metrics.decision("envoy", rule.domain, "over_limit");
        continue;
      }
      const joint = joined(decisions, starts[j]!, counts[j]!, plan.active[i]!, plan.hits[i]!);
      const { resolved, borrowed } = joint;
      let d = joint.decision;
      // Refused by its quota while the pool is idle: served from the idle capacity.
      if (!d.allowed && pools?.lend(plan.active[i]!, plan.hits[i]!, now)) d = { ...d, allowed: true };
      countTenant(metrics, plan.active[i]!, plan.ranks?.[i], d.allowed, borrowed, plan.hits[i]!);
      const rule = resolved.rule;
      const over = !d.allowed;
      out[j] = {
        code: over ? EnvoyCode.OVER_LIMIT : EnvoyCode.OK,
        currentLimit: { name: rule.name ?? "", requestsPerUnit: rule.limit, unit: UNIT_PROTO[rule.unit] },
        limitRemaining: d.remaining,
        durationUntilReset: { seconds: Math.max(0, Math.ceil((d.resetAt - now) / 1000)), nanos: 0 },
      };
      metrics.decision("envoy", rule.domain, d.shadowed ? "shadow_over_limit" : over ? "over_limit" : "ok");
      this.recordDescriptor(plan, i, resolved.rule, d);
      if (over) {
        const retryMs = Number.isFinite(d.retryAt) ? Math.max(0, Math.round(d.retryAt - now)) : 0;
        this.deps.why?.decided(resolved, d, plan.hits[i]!, retryMs, now, false);
      }
    }
    return out;
  }

  private recordDescriptor(plan: EnvoyPlan, i: number, rule: LimitRule, d: Decision): void {
    const { descriptorMetrics, metricKey } = this.deps;
    const entries = plan.entries?.[i];
    if (descriptorMetrics === undefined || metricKey === undefined || entries === undefined) return;
    // A limit override from the request has no config path: Envoy names it by the request's entries.
    const key =
      rule.source.file === "(request)"
        ? [plan.domain, ...entries.map((e) => (e.value ? `${e.key}_${e.value}` : e.key))].join(".")
        : metricKey(plan.domain, entries);
    if (key !== undefined) descriptorMetrics.record(key, rule, d, plan.hits[i]!);
  }

  /** See respondEnvoy. */
  respond(plan: EnvoyPlan, statuses: readonly EnvoyDescriptorStatus[]): EnvoyResponse {
    const { options, metrics, clock } = this.deps;
    return respondEnvoy(plan, statuses, metrics, options, clock.now());
  }
}

/**
 * envoyproxy/ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT: when a charge would take any
 * descriptor over its limit, the descriptors that stay within theirs are only checked (cost 0),
 * so a request that is rejected anyway does not use up the others. Decided on the counters as
 * they are before the request; items of one descriptor (a tenant and its group) go together.
 */
function chargeOnlyOverLimit(
  engine: Engine,
  items: CheckItem[],
  starts: readonly number[],
  counts: readonly number[],
  now: number,
): void {
  const over: boolean[] = new Array(starts.length).fill(false);
  let any = false;
  for (let j = 0; j < starts.length; j++) {
    for (let k = starts[j]!; k < starts[j]! + counts[j]!; k++) {
      const it = items[k]!;
      if (engine.peek(it.key, it.limit, now).remaining < it.cost) over[j] = true;
    }
    any ||= over[j]!;
  }
  if (!any) return;
  for (let j = 0; j < starts.length; j++) {
    if (over[j]) continue;
    for (let k = starts[j]!; k < starts[j]! + counts[j]!; k++) items[k] = { ...items[k]!, cost: 0 };
  }
}
