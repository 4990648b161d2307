import type { GatewayLimiter } from "../client/gateway-limiter.js";
import { reportKey, withPriority } from "../client/key-table.js";
import { PRIORITY_KEY } from "../config/priority.js";
import { DEFAULT_PRIORITY, PRIORITIES, type Priority, UNIT_PROTO } from "../config/types.js";
import { type Clock, systemClock } from "../core/clock.js";
import { UnavailableError } from "../core/errors.js";
import { PRIORITY_RANK } from "../core/priority.js";
import type { InputLimits } from "../protocol/input-limits.js";
import {
  EnvoyCode,
  type EnvoyDescriptorStatus,
  type EnvoyRequest,
  type EnvoyResponse,
} from "../protocol/messages.js";
import { type CallMetadata, connect, type RateLimiterRpc } from "../protocol/rpc.js";
import { DEFAULT_ENVOY_OPTIONS, type EnvoyOptions } from "../server/envoy-options.js";
import { planEnvoy, respondEnvoy } from "../server/envoy-plan.js";

/**
 * Envoy's ShouldRateLimit answered from the embedded gateway client's local state: an unmodified
 * Envoy gets batched-mode latency (no network on the request path), while the counts travel to
 * the owners in batches. Requests carrying a per-request limit override (`descriptor.limit`) are
 * passed to the servers synchronously: such limits exist only in the request, so only an exact
 * counter can apply them.
 */
export class EnvoySidecar {
  private readonly passthrough = new Map<string, RateLimiterRpc>();
  private turn = 0;

  constructor(
    private readonly limiter: GatewayLimiter,
    private readonly limits: InputLimits,
    private readonly servers: readonly string[],
    private readonly clock: Clock = systemClock,
    /** envoyproxy/ratelimit's options that shape the answer (headers, quota and shadow mode, metadata). */
    private readonly options: EnvoyOptions = DEFAULT_ENVOY_OPTIONS,
    /** Per call to a server: the sidecar's bearer token (`--token-file`). */
    private readonly metadata?: CallMetadata,
  ) {}

  shouldRateLimit(req: EnvoyRequest): EnvoyResponse | Promise<EnvoyResponse> {
    const config = this.limiter.limitConfig();
    if (config === undefined) {
      // Not ready: validate as always, then answer as the limiter does before it knows the limits.
      planEnvoy(req, { limits: this.limits, resolve: () => undefined, knownDomain: () => false });
      const code = this.limiter.admitsBeforeReady ? EnvoyCode.OK : EnvoyCode.OVER_LIMIT;
      return { overallCode: code, statuses: req.descriptors.map(() => ({ code })) };
    }
    if (req.descriptors.some((d) => d.limit)) return this.shed(req) ?? this.passThrough(req);
    const plan = planEnvoy(req, {
      limits: this.limits,
      resolve: (domain, entries) => config.resolve(domain, entries),
      knownDomain: (domain) => config.domains.includes(domain),
    });
    const shed = this.shed(req);
    if (shed !== undefined) return shed;
    const now = this.clock.now();
    const statuses: EnvoyDescriptorStatus[] = plan.limited.map((i) => {
      const r = plan.active[i]!;
      // The key the counter is reported under: a tenant charged to its group's fair-share limit
      // alone keeps its tenant entry, so the owner attributes the units to it.
      // Its class, when the descriptor names one: the owner divides the limit by class, so the
      // class is counted apart (as the server's Envoy path does). The host guard was asked once
      // for the whole request above (`shed`), not again per descriptor.
      const rank = plan.ranks?.[i];
      const key = rank === undefined ? reportKey(r) : withPriority(reportKey(r), PRIORITIES[rank]!);
      const ok = this.limiter.decide(key, plan.hits[i]!, { hostGuard: false });
      const d = this.limiter.describe(key);
      const rule = r.rule;
      // The owner's figures as of its last answer, less what this gateway admitted since; before
      // any answer, the limit less what it admitted.
      const remaining = d?.known ? d.remaining - d.admittedSince : rule.limit - (d?.admittedSince ?? 0);
      const resetAt = d?.known && d.resetAt > now ? d.resetAt : now + rule.windowMs;
      return {
        code: ok ? EnvoyCode.OK : EnvoyCode.OVER_LIMIT,
        currentLimit: { name: rule.name ?? "", requestsPerUnit: rule.limit, unit: UNIT_PROTO[rule.unit] },
        limitRemaining: ok ? Math.max(0, Math.floor(remaining)) : 0,
        durationUntilReset: { seconds: Math.max(0, Math.ceil((resetAt - now) / 1000)), nanos: 0 },
      };
    });
    return respondEnvoy(plan, statuses, { decision() {} }, this.options, now);
  }

  /**
   * The host guard's answer (`--host-guard-*`), for the whole request: OVER_LIMIT for every
   * descriptor when it sheds the request's class (its highest `priority` entry; none: normal),
   * undefined to go on. Decided before anything is counted or sent.
   */
  private shed(req: EnvoyRequest): EnvoyResponse | undefined {
    const guard = this.limiter.guard;
    if (guard === undefined || guard.admit(requestClass(req), Math.random())) return undefined;
    const code = EnvoyCode.OVER_LIMIT;
    return { overallCode: code, statuses: req.descriptors.map(() => ({ code })) };
  }

  /** A request with a per-request limit override: to the servers, in turn until one answers. */
  private async passThrough(req: EnvoyRequest): Promise<EnvoyResponse> {
    let last: unknown;
    for (let i = 0; i < this.servers.length; i++) {
      const address = this.servers[(this.turn + i) % this.servers.length]!;
      let rpc = this.passthrough.get(address);
      if (rpc === undefined) {
        rpc = connect(address, {}, undefined, undefined, this.metadata);
        this.passthrough.set(address, rpc);
      }
      try {
        return await rpc.shouldRateLimit(req, { deadlineMs: 1000 });
      } catch (err) {
        last = err;
        this.turn++;
      }
    }
    throw new UnavailableError(
      `no server answered a request with a limit override: ${(last as Error)?.message}`,
    );
  }

  close(): void {
    for (const rpc of this.passthrough.values()) rpc.close();
  }
}

/** A request's priority class for the host guard: its highest valid `priority` entry, else normal. */
function requestClass(req: EnvoyRequest): Priority {
  let rank = -1;
  for (const d of req.descriptors) {
    for (const e of d.entries) {
      if (e.key === PRIORITY_KEY && Object.hasOwn(PRIORITY_RANK, e.value)) {
        rank = Math.max(rank, PRIORITY_RANK[e.value as Priority]);
      }
    }
  }
  return rank < 0 ? DEFAULT_PRIORITY : PRIORITIES[rank]!;
}
