import { type DescriptorEntry, type Resolved, UNIT_PROTO } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import type { CheckItem } from "../core/decision.js";
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
import { type EnvoyPlan, planEnvoy, respondEnvoy } from "./envoy-plan.js";
import type { LimiterMetrics } from "./metrics.js";
import type { Ownership } from "./ownership.js";
import type { WhyLog } from "./why.js";

export interface EnvoyDeps {
  engine: Engine;
  clock: Clock;
  ownership: Ownership;
  limits: InputLimits;
  metrics: LimiterMetrics;
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

  shouldRateLimit(req: EnvoyRequest): EnvoyResponse {
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
    return this.respond(plan, this.execute(plan, plan.limited));
  }

  /** See planEnvoy. */
  plan(req: EnvoyRequest): EnvoyPlan {
    return planEnvoy(req, { limits: this.deps.limits, resolve: this.resolve, knownDomain: this.knownDomain });
  }

  /** Charges the descriptors at `indices` (limited ones of `plan`) here; their statuses, in order. */
  execute(plan: EnvoyPlan, indices: readonly number[]): EnvoyDescriptorStatus[] {
    const { engine, clock, metrics } = this.deps;
    const now = clock.now();
    const items: CheckItem[] = [];
    const starts: number[] = new Array(indices.length);
    const counts: number[] = new Array(indices.length);
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j]!;
      starts[j] = items.length;
      counts[j] = addCharges(items, plan.active[i]!, plan.hits[i]!, plan.ranks?.[i], j);
    }
    const decisions = engine.checkMany(items, now, "envoy");
    const out: EnvoyDescriptorStatus[] = new Array(indices.length);
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j]!;
      const {
        decision: d,
        resolved,
        borrowed,
      } = joined(decisions, starts[j]!, counts[j]!, plan.active[i]!, plan.hits[i]!);
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
      if (over) {
        const retryMs = Number.isFinite(d.retryAt) ? Math.max(0, Math.round(d.retryAt - now)) : 0;
        this.deps.why?.decided(resolved, d, plan.hits[i]!, retryMs, now, false);
      }
    }
    return out;
  }

  /** See respondEnvoy. */
  respond(plan: EnvoyPlan, statuses: readonly EnvoyDescriptorStatus[]): EnvoyResponse {
    return respondEnvoy(plan, statuses, this.deps.metrics);
  }
}
