import type { PoolTransfer } from "../core/pool.js";
import type { CounterSnapshot } from "../core/transfer.js";
import type { ItemError } from "./item-errors.js";

/**
 * The decoded shapes of our wire messages, as protobufjs produces them: camelCase fields, absent
 * fields read as their defaults. Kept by hand next to proto/; the gRPC tests catch any drift.
 */

export interface ReportEntryMsg {
  key: string;
  keyHandle?: number;
  admitted: number;
  rejected: number;
  held: number;
  windowAdmitted: number;
  /** Units given back by tickets settled below their estimate (see the proto). */
  refunded?: number;
}

export interface ReportRequest {
  clientId: string;
  seq: number;
  generation: number;
  intervalMs: number;
  entries: ReportEntryMsg[];
  spanMs?: number;
  keyEpoch: number;
}

export interface KeyPolicy {
  kind?: number;
  units?: number;
  fraction?: number;
  validMs?: number;
  remaining?: number;
  limit?: number;
  resetMs?: number;
  error?: ItemError;
  keyHandle?: number;
  gateways?: number;
  /** A `global: true` limit's fair part of its rate for this gateway, units per second. */
  sharePerS?: number;
}

export interface ReportResponse {
  generation: number;
  policies: KeyPolicy[];
  duplicate: boolean;
  keyEpoch: number;
  configVersion: string;
  incarnation: string;
  /** seq was older than the dedup window: nothing applied (duplicate is true too). */
  tooOld?: boolean;
}

export interface LimitsRequest {
  knownVersion: string;
}

export interface Limits {
  version: string;
  sources: { file: string; text: string }[];
  unchanged: boolean;
  /** Compile `sources` with domains merged across files (serve --merge-domains). */
  mergeDomains?: boolean;
}

export interface CheckItemMsg {
  key: string;
  cost: number;
  /** `PriorityMsg`; 0 (normal) when unset. Numbers outside the enum arrive as they are. */
  priority?: number;
  /** Admit `cost` as an estimate and answer a ticket to settle the actual cost with. */
  ticket?: boolean;
  /** Wait up to this long for the units (see proto); 0 or absent: decide now. */
  maxWaitMs?: number;
}

/** The wire's `Priority` enum. */
export const PriorityMsg = { NORMAL: 0, LOW: 1, HIGH: 2, CRITICAL: 3 } as const;

export interface CheckRequest {
  items: CheckItemMsg[];
  atomic: boolean;
  generation: number;
  /** Tickets of this check stay open this long (0: the default). */
  ticketTimeoutMs?: number;
  /**
   * Not a field of the public message: the identity the server authenticated the call as (or,
   * forwarded, the identity a member says it forwards for: `ForwardRequest.check_callers`).
   * Tickets record it as their taker. Absent without an authorisation file.
   */
  caller?: string;
  /** Answer each rejected item's reason in words (`CheckResult.explanation`). */
  explain?: boolean;
}

export interface CheckResult {
  allowed?: boolean;
  shadowed?: boolean;
  remaining?: number;
  limit?: number;
  resetMs?: number;
  retryMs?: number;
  rule?: string;
  error?: ItemError;
  /** The ticket this item's estimate is held under ("" or absent: none). */
  ticketId?: string;
  /** Asked for with `CheckRequest.explain`: why the item was rejected, in words. */
  explanation?: string;
}

/** `Inspect`: what the server knows about one key (operator-only). */
export interface InspectRequest {
  key: string;
}

export interface InspectResponse {
  /** Whether this server owns the key; when not, the owner's address to ask instead. */
  owned: boolean;
  ownerId: string;
  ownerAddress: string;
  generation: number;
  /** The inspection in words, and as JSON (server/inspect.ts `Inspection`). */
  text: string;
  json: string;
  /** The member that asked the owner for this answer (Peer.Inspect), when it was not the owner. */
  askedBy?: string;
  /** Why the member asked could not get the owner's answer; the rest is then its own view. */
  ownerError?: string;
}

export interface CheckResponse {
  generation: number;
  results: CheckResult[];
}

export interface AcquireRequest {
  key: string;
  leaseId: string;
  amount: number;
  timeoutMs: number;
  generation: number;
}

export interface AcquireResponse {
  allowed?: boolean;
  shadowed?: boolean;
  remaining?: number;
  limit?: number;
  rule?: string;
  error?: ItemError;
  generation: number;
}

export interface ReleaseRequest {
  key: string;
  leaseId: string;
  generation: number;
}

export interface ReleaseResponse {
  released?: boolean;
  error?: ItemError;
  generation: number;
}

export interface SettleRequest {
  key: string;
  delta: number;
  generation: number;
  /** Settle by ticket (exact): the ticket and each covered item's actual cost. */
  ticketId?: string;
  actual?: number[];
  /** The authenticated caller, as on `CheckRequest` (forwarded: `ForwardRequest.settle_callers`). */
  caller?: string;
}

export interface SettleResponse {
  remaining?: number;
  limit?: number;
  resetMs?: number;
  error?: ItemError;
  generation: number;
  /** The ticket had been settled before: the first answer, nothing changed. */
  alreadySettled?: boolean;
}

export interface ClusterViewRequest {
  knownGeneration: number;
}

export interface ClusterView {
  generation: number;
  members: { id: string; address: string }[];
  slices: { start: string; owner: number }[];
  standalone: boolean;
}

// envoy.service.ratelimit.v3

export const EnvoyCode = { UNKNOWN: 0, OK: 1, OVER_LIMIT: 2 } as const;

export interface EnvoyDescriptor {
  entries: { key: string; value: string }[];
  limit?: { requestsPerUnit: number; unit: number } | null;
  hitsAddend?: { value: number } | null;
}

export interface EnvoyRequest {
  domain: string;
  descriptors: EnvoyDescriptor[];
  hitsAddend: number;
}

export interface EnvoyDescriptorStatus {
  code: number;
  currentLimit?: { name: string; requestsPerUnit: number; unit: number };
  limitRemaining?: number;
  durationUntilReset?: { seconds: number; nanos: number };
}

export interface EnvoyResponse {
  overallCode: number;
  statuses: EnvoyDescriptorStatus[];
  /** `X-RateLimit-*`-style headers for Envoy to add to the client's response. */
  responseHeadersToAdd?: { key: string; value: string }[];
  dynamicMetadata?: StructValue;
}

/** `google.protobuf.Struct` as protobufjs encodes it: `{ fields: { name: { stringValue } } }`. */
export interface StructValue {
  fields: Record<string, unknown>;
}

// shardlimit.v1.Peer (server to server)

export interface ForwardRequest {
  generation: number;
  envoy: EnvoyRequest[];
  checks: CheckRequest[];
  /** Idempotency (see peer.proto): the sender's run id and a sequence number per part. */
  sender?: string;
  envoyIds?: number[];
  checkIds?: number[];
  /** Settles by ticket (idempotent by themselves: no ids). */
  settles?: SettleRequest[];
  /** The identity each check / settle part is forwarded for (see peer.proto). */
  checkCallers?: string[];
  settleCallers?: string[];
  /** Pool backends' reports (the latest per backend wins: no ids). */
  pools?: PoolReportRequest[];
}

export interface ForwardedEnvoy {
  response?: EnvoyResponse | null;
  error?: ItemError | null;
}

export interface ForwardResponse {
  generation: number;
  envoy: ForwardedEnvoy[];
  checks: CheckResponse[];
  checkErrors: ItemError[];
  settles?: SettleResponse[];
  pools?: PoolReportResponse[];
}

export interface PointRange {
  start: number;
  /** Exclusive, up to 2^32. */
  end: number;
}

/** A counter on the wire is its snapshot (core/transfer.ts), field for field. */
export type CounterStateMsg = CounterSnapshot;

export interface HandoffRequest {
  generation: number;
  from: string;
  ranges: PointRange[];
  counters: CounterStateMsg[];
  done: boolean;
  /** Issue 14: the pools whose key is in `ranges` (the last chunk; absent from older senders). */
  pools?: PoolStateMsg[];
}

/** A pool's state in a handoff: the wire's PoolState is core/pool.ts's PoolTransfer. */
export type PoolStateMsg = PoolTransfer;

export interface HandoffResponse {
  accepted: number;
  error?: ItemError | null;
  generation: number;
}

export interface ReclaimRequest {
  generation: number;
  from: string;
  address: string;
  ranges: PointRange[];
}

export interface ReclaimResponse {
  error?: ItemError | null;
  generation: number;
}

export interface ReplicateRequest {
  from: string;
  generation: number;
  counters: CounterStateMsg[];
  drained: boolean;
}

export interface ReplicateResponse {
  accepted: number;
  error?: ItemError | null;
  generation: number;
}

export interface StandbyRequest {
  of: string;
  generation: number;
  ranges: PointRange[];
  offset: number;
}

export interface StandbyResponse {
  counters: CounterStateMsg[];
  nextOffset: number;
  error?: ItemError | null;
  generation: number;
}

/** issue 14: a backend's utilisation for its pool, sent to the owner of the pool's key. */
export interface PoolReportRequest {
  /** The pool's name (`pools:` in the config). */
  pool: string;
  /** The backend's id: the owner keeps its latest value and forgets it when it falls silent. */
  backend: string;
  /** Utilisation in [0, 1]. */
  utilisation: number;
  /** Units per second the backend can serve (> 0): its weight in the pool's average. */
  capacity: number;
  generation: number;
}

export interface PoolReportResponse {
  generation: number;
  /** `quota`, `overloaded` or `idle`. */
  mode?: string;
  /** The controller's output: below 0 the fraction shed, above 0 the fraction of capacity lent. */
  level?: number;
  /** Rejected fraction per class, `low` first. */
  fractions?: number[];
  /** The pool's capacity-weighted utilisation. */
  utilisation?: number;
  error?: ItemError;
}
