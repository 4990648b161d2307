import type { ServerUnaryCall } from "@grpc/grpc-js";
import { PolicyKind } from "../core/policy.js";
import type { CheckResponse, EnvoyResponse, ForwardResponse, ReportResponse } from "../protocol/messages.js";
import { activeTracer, serverSpan } from "../protocol/tracing.js";

type Attrs = Record<string, string | number | boolean>;

/**
 * `fn` inside a server span `shardlimit.<name>` (child of the caller's `traceparent`) when tracing
 * is on, with the answer's decision as attributes; `fn` itself, one test more, when off.
 */
export function traced<Req, Res, Rest extends unknown[] = []>(
  name: string,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>, ...rest: Rest) => Res | Promise<Res>,
  describe?: (res: Res) => Attrs,
): (req: Req, call: ServerUnaryCall<Req, Res>, ...rest: Rest) => Res | Promise<Res> {
  const span = `shardlimit.${name}`;
  return (req, call, ...rest) => {
    const t = activeTracer();
    if (t === undefined) return fn(req, call, ...rest);
    return serverSpan(t, span, call.metadata, () => fn(req, call, ...rest), describe);
  };
}

/** Check: items allowed and rejected; `decision` allowed, rejected or partial. */
export function checkAttrs(res: CheckResponse): Attrs {
  let allowed = 0;
  let rejected = 0;
  let errors = 0;
  for (const r of res.results) {
    if (r.error?.code) errors++;
    else if (r.allowed) allowed++;
    else rejected++;
  }
  const decision = rejected + errors === 0 ? "allowed" : allowed === 0 ? "rejected" : "partial";
  return {
    "shardlimit.decision": decision,
    "shardlimit.allowed": allowed,
    "shardlimit.rejected": rejected,
    "shardlimit.errors": errors,
  };
}

const ENVOY_CODES = ["UNKNOWN", "OK", "OVER_LIMIT"];

/** ShouldRateLimit: Envoy's overall code. */
export function envoyAttrs(res: EnvoyResponse): Attrs {
  return { "shardlimit.decision": ENVOY_CODES[res.overallCode] ?? String(res.overallCode) };
}

/** A report: its entries and how many of them were given a rejecting policy. */
export function reportAttrs(res: ReportResponse): Attrs {
  let rejecting = 0;
  for (const p of res.policies) {
    if (p.kind === PolicyKind.REJECT_UNTIL || p.kind === PolicyKind.REJECT_FRACTION) rejecting++;
  }
  return { "shardlimit.entries": res.policies.length, "shardlimit.rejecting_policies": rejecting };
}

/** A forwarded call at its owner: the parts it answered. */
export function forwardAttrs(res: ForwardResponse): Attrs {
  return { "shardlimit.checks": res.checks.length, "shardlimit.envoy": res.envoy.length };
}
