import { encodeKey } from "../config/key.js";
import { splitPriority } from "../config/priority.js";
import { applyReplaces } from "../config/replaces.js";
import {
  DEFAULT_PRIORITY,
  type DescriptorEntry,
  type LimitRule,
  type Resolved,
  UNIT_PROTO,
  UNIT_SECONDS,
  type Unit,
} from "../config/types.js";
import { InvalidArgumentError } from "../core/errors.js";
import { PRIORITY_RANK } from "../core/priority.js";
import { amountProblem, type InputLimits, keyProblem } from "../protocol/input-limits.js";
import {
  EnvoyCode,
  type EnvoyDescriptor,
  type EnvoyDescriptorStatus,
  type EnvoyRequest,
  type EnvoyResponse,
} from "../protocol/messages.js";
import { DEFAULT_ENVOY_OPTIONS, type EnvoyOptions, shapeEnvoy } from "./envoy-options.js";
import type { LimiterMetrics } from "./metrics.js";

/**
 * The parts of ShouldRateLimit that touch no counter: validating and resolving a request against
 * the config, and shaping the answer. The server charges its engine in between; the sidecar asks
 * its gateway limiter.
 */

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
    soft: false,
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
  /** Per descriptor: the priority class rank its `priority` entry gave; absent when none did. */
  ranks?: (number | undefined)[];
  /** The request planned, for the answer's dynamic metadata and per-descriptor metrics. */
  request?: EnvoyRequest;
  /** Per descriptor: its entries without the `priority` one, as matched. */
  entries?: (readonly DescriptorEntry[])[];
}

export interface PlanContext {
  limits: InputLimits;
  resolve: (domain: string, entries: readonly DescriptorEntry[]) => Resolved | undefined;
  /** Whether the config defines `domain`: a limit override in an unknown domain is ignored. */
  knownDomain: (domain: string) => boolean;
}

/**
 * Validates the request and resolves every descriptor against the config, with `replaces`
 * applied. Touches no counter, so a cluster can split the result by owner first.
 */
export function planEnvoy(req: EnvoyRequest, ctx: PlanContext): EnvoyPlan {
  const { limits } = ctx;
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
  let ranks: (number | undefined)[] | undefined;
  const hits: number[] = new Array(req.descriptors.length);
  const matched: (readonly DescriptorEntry[])[] = new Array(req.descriptors.length);
  for (let i = 0; i < req.descriptors.length; i++) {
    const d = req.descriptors[i]!;
    if (d.entries.length > limits.maxDescriptorEntries) {
      throw new InvalidArgumentError(
        `descriptor ${i} has ${d.entries.length} entries, over the maximum of ${limits.maxDescriptorEntries}`,
      );
    }
    for (const e of d.entries) {
      const bad =
        keyProblem(e.key, limits) ?? (e.value.length > limits.maxKeyLength ? "value is too long" : undefined);
      if (bad !== undefined) throw new InvalidArgumentError(`descriptor ${i}: entry ${bad}`);
    }
    const h = d.hitsAddend ? d.hitsAddend.value : requestHits;
    const bad = amountProblem(`descriptor ${i} hits_addend`, h, limits);
    if (bad !== undefined) throw new InvalidArgumentError(bad);
    hits[i] = h;
    // A `priority` entry names the request's class; it selects no rule and keys no counter.
    const split = splitPriority(d.entries);
    if (typeof split === "string") throw new InvalidArgumentError(`descriptor ${i}: ${split}`);
    const entries = split.entries;
    matched[i] = entries;
    if (split.priority !== DEFAULT_PRIORITY) {
      ranks ??= new Array(req.descriptors.length);
      ranks[i] = PRIORITY_RANK[split.priority];
    }
    const configured = entries.length > 0 ? ctx.resolve(req.domain, entries) : undefined;
    const override = d.limit && ctx.knownDomain(req.domain) ? overrideRule(req.domain, d) : undefined;
    if (override) {
      const counterKey = `${encodeKey(req.domain, entries)}#${override.id}`;
      resolved[i] = { rule: override, counterKey, shardKey: configured?.shardKey ?? counterKey };
    } else resolved[i] = configured;
    const key = resolved[i]?.counterKey;
    // Each entry is bounded, but up to 32 of them make one counter key: bound that too, or a
    // caller could park kilobytes of key per counter (for a year, with a limit override).
    if (key !== undefined && key.length > limits.maxKeyLength) {
      throw new InvalidArgumentError(
        `descriptor ${i}: its counter key is ${key.length} long, over the maximum of ${limits.maxKeyLength}`,
      );
    }
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
  return ranks === undefined
    ? { domain: req.domain, active, hits, limited, request: req, entries: matched }
    : { domain: req.domain, active, hits, limited, ranks, request: req, entries: matched };
}

/**
 * The answer: `statuses[j]` for the descriptor at `plan.limited[j]` (decided here or by its
 * owner); descriptors without a limit answered as envoyproxy/ratelimit does.
 */
export function respondEnvoy(
  plan: EnvoyPlan,
  statuses: readonly EnvoyDescriptorStatus[],
  metrics: Pick<LimiterMetrics, "decision">,
  options: EnvoyOptions = DEFAULT_ENVOY_OPTIONS,
  nowMs = 0,
): EnvoyResponse {
  // As envoyproxy/ratelimit answers: no limit -> remaining 0; unlimited -> remaining 2^32-1.
  const noLimit = plan.active.length - plan.limited.length;
  let out: EnvoyDescriptorStatus[];
  if (noLimit === 0) out = statuses.slice();
  else {
    out = plan.active.map((r) =>
      r?.rule.unlimited ? { code: EnvoyCode.OK, limitRemaining: 0xffff_ffff } : { code: EnvoyCode.OK },
    );
    for (let j = 0; j < plan.limited.length; j++) out[plan.limited[j]!] = statuses[j]!;
    metrics.decision("envoy", plan.domain, "no_limit", noLimit);
  }
  // shapeEnvoy's object is new each call: the answer is it with the statuses (no spread copy).
  const shaped: Omit<EnvoyResponse, "statuses"> & { statuses?: EnvoyDescriptorStatus[] } = shapeEnvoy(
    plan.request,
    plan,
    out,
    options,
    nowMs,
  );
  shaped.statuses = out;
  return shaped as EnvoyResponse;
}
