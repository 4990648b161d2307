import { UNIT_PROTO, UNIT_SECONDS, type Unit } from "../config/types.js";
import {
  EnvoyCode,
  type EnvoyDescriptorStatus,
  type EnvoyRequest,
  type StructValue,
} from "../protocol/messages.js";
import type { EnvoyPlan } from "./envoy-plan.js";

/**
 * envoyproxy/ratelimit's server options for `ShouldRateLimit` (its environment variables in
 * brackets), and how they shape the answer once every descriptor has its status.
 */
export interface EnvoyOptions {
  /** Every OVER_LIMIT answer becomes OK; statuses are left as they are (SHADOW_MODE). */
  readonly shadowMode: boolean;
  /** Every limit is in quota mode, as if `quota_mode: true` were on each (QUOTA_MODE). */
  readonly quotaMode: boolean;
  /** `RateLimit-Limit`-style headers in `response_headers_to_add` (LIMIT_RESPONSE_HEADERS_ENABLED). */
  readonly responseHeaders?: {
    readonly limit: string;
    readonly remaining: string;
    readonly reset: string;
  };
  /** The request and the passing limits' `metadata` in `dynamic_metadata` (RESPONSE_DYNAMIC_METADATA). */
  readonly dynamicMetadata: boolean;
  /** When one descriptor would go over, charge only the ones that do (STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT). */
  readonly stopChargingWhenOverLimit: boolean;
  /** Hits above this fraction of a limit count as near the limit (NEAR_LIMIT_RATIO). */
  readonly nearLimitRatio: number;
}

/** envoyproxy/ratelimit's defaults (LIMIT_LIMIT_HEADER, LIMIT_REMAINING_HEADER, LIMIT_RESET_HEADER). */
export const DEFAULT_HEADER_NAMES = {
  limit: "RateLimit-Limit",
  remaining: "RateLimit-Remaining",
  reset: "RateLimit-Reset",
} as const;

export const DEFAULT_ENVOY_OPTIONS: EnvoyOptions = {
  shadowMode: false,
  quotaMode: false,
  dynamicMetadata: false,
  stopChargingWhenOverLimit: false,
  nearLimitRatio: 0.8,
};

const UNIT_BY_PROTO = new Map<number, Unit>(Object.entries(UNIT_PROTO).map(([u, n]) => [n, u as Unit]));

/**
 * The overall code, headers and dynamic metadata for `statuses` (one per descriptor, final), as
 * envoyproxy/ratelimit's service computes them (src/service/ratelimit.go):
 * - OVER_LIMIT when a limit not in quota mode is over, or every quota-mode limit of the request
 *   is (and there is one); a quota-mode limit over on its own leaves the request OK;
 * - global shadow mode turns OVER_LIMIT into OK;
 * - the headers describe the descriptor closest to its limit, or the last one over it (not in
 *   quota mode); the reset is the time to the end of its unit, counted from the epoch;
 * - the dynamic metadata has the domain, every descriptor's entries as `key=value`, the hits and
 *   the `metadata` of every limit that passed, merged.
 */
export function shapeEnvoy(
  req: EnvoyRequest | undefined,
  plan: EnvoyPlan,
  statuses: readonly EnvoyDescriptorStatus[],
  options: EnvoyOptions,
  nowMs: number,
): {
  overallCode: number;
  responseHeadersToAdd?: { key: string; value: string }[];
  dynamicMetadata?: StructValue;
} {
  let overLimit = 0;
  let quota = 0;
  let quotaOver = 0;
  let closest: EnvoyDescriptorStatus | undefined;
  let closestRemaining = 0xffff_ffff;
  // The descriptors within their limits, for the dynamic metadata only.
  const passed: number[] | undefined = options.dynamicMetadata && req ? [] : undefined;
  for (let i = 0; i < statuses.length; i++) {
    const st = statuses[i]!;
    const r = plan.active[i];
    if (st.currentLimit && (st.limitRemaining ?? 0) < closestRemaining) {
      closest = st;
      closestRemaining = st.limitRemaining ?? 0;
    }
    if (r?.rule.unlimited) continue;
    const inQuota = options.quotaMode || r?.rule.quotaMode === true;
    if (inQuota) quota++;
    if (st.code === EnvoyCode.OVER_LIMIT) {
      if (inQuota) quotaOver++;
      else {
        overLimit++;
        closest = st;
        closestRemaining = 0;
      }
    } else passed?.push(i);
  }
  let overallCode: number =
    overLimit > 0 || (quota > 0 && quota === quotaOver) ? EnvoyCode.OVER_LIMIT : EnvoyCode.OK;
  if (options.shadowMode) overallCode = EnvoyCode.OK;
  const out: ReturnType<typeof shapeEnvoy> = { overallCode };
  const names = options.responseHeaders;
  if (names && closest?.currentLimit) {
    const unit = UNIT_BY_PROTO.get(closest.currentLimit.unit) ?? "second";
    const seconds = UNIT_SECONDS[unit];
    out.responseHeadersToAdd = [
      { key: names.limit, value: String(closest.currentLimit.requestsPerUnit) },
      { key: names.remaining, value: String(closest.limitRemaining ?? 0) },
      { key: names.reset, value: String(seconds - (Math.floor(nowMs / 1000) % seconds)) },
    ];
  }
  if (passed && req) out.dynamicMetadata = metadataOf(req, plan, passed);
  return out;
}

function metadataOf(req: EnvoyRequest, plan: EnvoyPlan, passed: readonly number[]): StructValue {
  const fields: Record<string, unknown> = {
    domain: req.domain,
    descriptors: req.descriptors.map((d) => ({
      entries: d.entries.map((e) => `${e.key}=${e.value}`),
      ...(d.limit
        ? { limit: `requests_per_unit:${d.limit.requestsPerUnit} unit:${unitName(d.limit.unit)}` }
        : {}),
      ...(d.hitsAddend ? { hitsAddend: d.hitsAddend.value } : {}),
    })),
  };
  if (req.hitsAddend !== 0) fields.hitsAddend = req.hitsAddend;
  const merged: Record<string, unknown> = {};
  for (const i of passed) {
    const m = plan.active[i]?.rule.metadata;
    if (m) mergeInto(merged, m);
  }
  if (Object.keys(merged).length > 0) fields.metadata = merged;
  return toStruct(fields);
}

function unitName(unit: number): string {
  return (UNIT_BY_PROTO.get(unit) ?? "unknown").toUpperCase();
}

/** Envoy's merge: keys already there stay, except maps, which merge recursively. */
function mergeInto(dest: Record<string, unknown>, src: Readonly<Record<string, unknown>>): void {
  for (const [k, v] of Object.entries(src)) {
    const had = dest[k];
    if (had === undefined) dest[k] = isPlainMap(v) ? structuredClone(v) : v;
    else if (isPlainMap(had) && isPlainMap(v)) mergeInto(had, v);
  }
}

function isPlainMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A plain JSON-like value as `google.protobuf.Struct`'s wire shape (protobufjs field names). */
export function toStruct(obj: Readonly<Record<string, unknown>>): StructValue {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}

function toValue(v: unknown): unknown {
  if (v === null || v === undefined) return { nullValue: 0 };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}
