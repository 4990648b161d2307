import { encodeKey } from "../config/key.js";
import { applyReplaces } from "../config/replaces.js";
import { type LimitRule, type Resolved, UNIT_PROTO, UNIT_SECONDS, type Unit } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import type { CheckItem, Engine } from "../core/engine.js";
import { InvalidArgumentError, NotOwnerError } from "../errors.js";
import { amountProblem, type InputLimits, keyProblem } from "./input-limits.js";
import {
  EnvoyCode,
  type EnvoyDescriptor,
  type EnvoyDescriptorStatus,
  type EnvoyRequest,
  type EnvoyResponse,
} from "./messages.js";
import type { LimiterMetrics } from "./metrics.js";
import type { Ownership } from "./ownership.js";

const UNIT_BY_PROTO = new Map<number, Unit>(Object.entries(UNIT_PROTO).map(([u, n]) => [n, u as Unit]));

/**
 * A limit from the request itself (`RateLimitDescriptor.limit`), as envoyproxy/ratelimit honours
 * it (config_impl.go, GetLimit): in a known domain only, whether or not the config matches the
 * descriptor; a fixed window of the given size and unit, counted apart from the configured one;
 * never in shadow mode, with no name and no `replaces` of its own.
 */
function overrideRule(domain: string, d: EnvoyDescriptor): LimitRule | undefined {
  const o = d.limit;
  if (!o) return undefined;
  const unit = UNIT_BY_PROTO.get(o.unit);
  if (unit === undefined)
    throw new InvalidArgumentError(`descriptor limit override has an unknown unit (${o.unit})`);
  const windowMs = UNIT_SECONDS[unit] * 1000;
  return {
    id: `${domain}/override/${o.requestsPerUnit}/${unit}`,
    domain,
    algorithm: "fixed_window",
    limit: o.requestsPerUnit,
    windowMs,
    burst: o.requestsPerUnit,
    unit,
    costUnit: "requests",
    unlimited: false,
    shadowMode: false,
    replaces: [],
    leaseTimeoutMs: 0,
    localAllowance: 0,
    failMode: "open",
    source: { file: "(request)", path: "limit" },
  };
}

/** A validated, resolved request: what each descriptor is limited by, before anything is charged. */
export interface EnvoyPlan {
  domain: string;
  /** Per descriptor: its limit after `replaces`, or undefined when none applies. */
  active: (Resolved | undefined)[];
  hits: number[];
  /** Indices of the descriptors with a limit to charge (not unlimited), in order. */
  limited: number[];
}

export interface EnvoyDeps {
  engine: Engine;
  clock: Clock;
  ownership: Ownership;
  limits: InputLimits;
  metrics: LimiterMetrics;
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
    private readonly resolve: (domain: string, entries: EnvoyDescriptor["entries"]) => Resolved | undefined,
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

  /**
   * Validates the request and resolves every descriptor against the config, with `replaces`
   * applied. Touches no counter, so a cluster can split the result by owner first.
   */
  plan(req: EnvoyRequest): EnvoyPlan {
    const { limits } = this.deps;
    if (req.domain === "") throw new InvalidArgumentError("rate limit domain must not be empty");
    if (req.descriptors.length === 0)
      throw new InvalidArgumentError("rate limit descriptor list must not be empty");
    if (req.descriptors.length > limits.maxBatch) {
      throw new InvalidArgumentError(
        `request has ${req.descriptors.length} descriptors, over the maximum of ${limits.maxBatch}`,
      );
    }
    const requestHits = req.hitsAddend === 0 ? 1 : req.hitsAddend;
    const resolved: (Resolved | undefined)[] = new Array(req.descriptors.length);
    const hits: number[] = new Array(req.descriptors.length);
    for (let i = 0; i < req.descriptors.length; i++) {
      const d = req.descriptors[i]!;
      if (d.entries.length > limits.maxDescriptorEntries) {
        throw new InvalidArgumentError(
          `descriptor ${i} has ${d.entries.length} entries, over the maximum of ${limits.maxDescriptorEntries}`,
        );
      }
      for (const e of d.entries) {
        const bad =
          keyProblem(e.key, limits) ??
          (e.value.length > limits.maxKeyLength ? "value is too long" : undefined);
        if (bad !== undefined) throw new InvalidArgumentError(`descriptor ${i}: entry ${bad}`);
      }
      const h = d.hitsAddend ? d.hitsAddend.value : requestHits;
      const bad = amountProblem(`descriptor ${i} hits_addend`, h, limits);
      if (bad !== undefined) throw new InvalidArgumentError(bad);
      hits[i] = h;
      const configured = d.entries.length > 0 ? this.resolve(req.domain, d.entries) : undefined;
      const override = d.limit && this.knownDomain(req.domain) ? overrideRule(req.domain, d) : undefined;
      if (override) {
        const counterKey = `${encodeKey(req.domain, d.entries)}#${override.id}`;
        resolved[i] = { rule: override, counterKey, shardKey: configured?.shardKey ?? counterKey };
      } else resolved[i] = configured;
      const rule = resolved[i]?.rule;
      if (rule?.algorithm === "concurrency") {
        throw new InvalidArgumentError(
          `descriptor ${i} matches ${rule.id}, a concurrency limit, which ShouldRateLimit cannot release: use Acquire and Release`,
        );
      }
    }
    const active = applyReplaces(resolved);
    const limited: number[] = [];
    for (let i = 0; i < active.length; i++) {
      const r = active[i];
      if (r !== undefined && !r.rule.unlimited) limited.push(i);
    }
    return { domain: req.domain, active, hits, limited };
  }

  /** Charges the descriptors at `indices` (limited ones of `plan`) here; their statuses, in order. */
  execute(plan: EnvoyPlan, indices: readonly number[]): EnvoyDescriptorStatus[] {
    const { engine, clock, metrics } = this.deps;
    const now = clock.now();
    const items: CheckItem[] = new Array(indices.length);
    for (let j = 0; j < indices.length; j++) {
      const r = plan.active[indices[j]!]!;
      items[j] = { key: r.counterKey, limit: r.rule, cost: plan.hits[indices[j]!]!, shard: r.shardKey };
    }
    const decisions = engine.checkMany(items, now, "envoy");
    const out: EnvoyDescriptorStatus[] = new Array(indices.length);
    for (let j = 0; j < indices.length; j++) {
      const d = decisions[j]!;
      const rule = plan.active[indices[j]!]!.rule;
      const over = !d.allowed;
      out[j] = {
        code: over ? EnvoyCode.OVER_LIMIT : EnvoyCode.OK,
        currentLimit: { name: rule.name ?? "", requestsPerUnit: rule.limit, unit: UNIT_PROTO[rule.unit] },
        limitRemaining: d.remaining,
        durationUntilReset: { seconds: Math.max(0, Math.ceil((d.resetAt - now) / 1000)), nanos: 0 },
      };
      metrics.decision("envoy", rule.domain, d.shadowed ? "shadow_over_limit" : over ? "over_limit" : "ok");
    }
    return out;
  }

  /**
   * The answer: `statuses[j]` for the descriptor at `plan.limited[j]` (decided here or by its
   * owner); descriptors without a limit answered as envoyproxy/ratelimit does.
   */
  respond(plan: EnvoyPlan, statuses: readonly EnvoyDescriptorStatus[]): EnvoyResponse {
    // As envoyproxy/ratelimit answers: no limit -> remaining 0; unlimited -> remaining 2^32-1.
    const out: EnvoyDescriptorStatus[] = plan.active.map((r) =>
      r?.rule.unlimited ? { code: EnvoyCode.OK, limitRemaining: 0xffff_ffff } : { code: EnvoyCode.OK },
    );
    let overall: number = EnvoyCode.OK;
    for (let j = 0; j < plan.limited.length; j++) {
      const st = statuses[j]!;
      out[plan.limited[j]!] = st;
      if (st.code === EnvoyCode.OVER_LIMIT) overall = EnvoyCode.OVER_LIMIT;
    }
    const noLimit = plan.active.length - plan.limited.length;
    if (noLimit > 0) this.deps.metrics.decision("envoy", plan.domain, "no_limit", noLimit);
    return { overallCode: overall, statuses: out };
  }
}
