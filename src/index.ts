/**
 * shardlimit as a library: the gateway client. The server runs as `shardlimit serve`.
 */
export { createLimiter, type LimiterOptions } from "./client/create.js";
export {
  type Descriptor,
  type GatewayInspection,
  GatewayLimiter,
  type GatewayLimiterOptions,
  type GaugeSignal,
  HostGuard,
  type HostGuardOptions,
  type HostGuardState,
  type LimiterStats,
  type LoadSignal,
  type Ticket,
} from "./client/gateway-limiter.js";
export { GrpcTransport } from "./client/grpc-transport.js";
export { registerClientMetrics } from "./client/metrics.js";
export type { ClientTransport } from "./client/transport.js";
export { type Clock, ManualClock, systemClock, type Timer } from "./core/clock.js";
// check() rejects with these: match on `code` (the table in ERRORS) or on the class.
export {
  ERRORS,
  type ErrorName,
  InvalidArgumentError,
  NotOwnerError,
  NotReadyError,
  ShardlimitError,
  UnavailableError,
} from "./core/errors.js";
// OpenTelemetry spans for reports and checks (register an SDK first; README "Tracing").
export { disableTracing, enableTracing } from "./protocol/tracing.js";
export type { ClientTlsOptions } from "./security/tls.js";
