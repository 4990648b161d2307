import * as grpc from "@grpc/grpc-js";
import { type Clock, systemClock } from "../core/clock.js";
import type {
  AcquireRequest,
  AcquireResponse,
  CheckRequest,
  CheckResponse,
  ClusterView,
  ClusterViewRequest,
  EnvoyRequest,
  EnvoyResponse,
  InspectRequest,
  InspectResponse,
  Limits,
  LimitsRequest,
  PoolReportRequest,
  PoolReportResponse,
  ReleaseRequest,
  ReleaseResponse,
  ReportRequest,
  ReportResponse,
  SettleRequest,
  SettleResponse,
} from "./messages.js";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE, serviceDefinition } from "./proto.js";

/**
 * The metadata each call sends, made per call: a bearer token read from a file that may have
 * been rotated since the last call (security/token-file.ts). Absent: none.
 */
export type CallMetadata = () => grpc.Metadata;

/** `signal` cancels the call (the server sees it cancelled; the promise rejects with CANCELLED). */
export type Unary<Req, Res> = (
  req: Partial<Req>,
  opts?: { deadlineMs?: number; signal?: AbortSignal; metadata?: grpc.Metadata },
) => Promise<Res>;

export interface RateLimiterRpc {
  reportAndGetPolicy: Unary<ReportRequest, ReportResponse>;
  check: Unary<CheckRequest, CheckResponse>;
  acquire: Unary<AcquireRequest, AcquireResponse>;
  release: Unary<ReleaseRequest, ReleaseResponse>;
  settle: Unary<SettleRequest, SettleResponse>;
  getClusterView: Unary<ClusterViewRequest, ClusterView>;
  getLimits: Unary<LimitsRequest, Limits>;
  shouldRateLimit: Unary<EnvoyRequest, EnvoyResponse>;
  reportPool: Unary<PoolReportRequest, PoolReportResponse>;
  /** Operator-only: what the server knows about one key. */
  inspect: Unary<InspectRequest, InspectResponse>;
  close(): void;
}

const RateLimiterClient = grpc.makeGenericClientConstructor(
  serviceDefinition(RATE_LIMITER_SERVICE),
  "RateLimiter",
);
const EnvoyClient = grpc.makeGenericClientConstructor(
  serviceDefinition(ENVOY_RLS_SERVICE),
  "RateLimitService",
);

/**
 * A typed promise over one unary method. `deadlineMs` becomes an absolute gRPC deadline on
 * `clock`; gRPC deadlines are wall-clock times, so only the system clock makes sense over a
 * real channel (the parameter exists so no part reads the time behind the clock's back).
 */
/**
 * A call's metadata: the channel's (a bearer token, read as of the call) and the call's own (a
 * trace context), merged; the channel's is copied first when both are there, since its source may
 * hand out one object.
 */
function callMetadata(channel: CallMetadata | undefined, own: grpc.Metadata | undefined): grpc.Metadata {
  const base = channel?.();
  if (base === undefined) return own ?? new grpc.Metadata();
  if (own === undefined) return base;
  const md = base.clone();
  md.merge(own);
  return md;
}

export function promisify<Req, Res>(
  client: grpc.Client,
  method: string,
  clock: Clock = systemClock,
  metadata?: CallMetadata,
): Unary<Req, Res> {
  const fn = (client as unknown as Record<string, grpc.requestCallback<Res> & ((...a: unknown[]) => void)>)[
    method
  ]!.bind(client);
  return (req, opts) =>
    new Promise((resolve, reject) => {
      const options: grpc.CallOptions = {};
      if (opts?.deadlineMs !== undefined) options.deadline = clock.now() + opts.deadlineMs;
      const call = fn(
        req,
        callMetadata(metadata, opts?.metadata),
        options,
        (err: grpc.ServiceError | null, res?: Res) => (err ? reject(err) : resolve(res!)),
      ) as unknown as grpc.ClientUnaryCall;
      opts?.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    });
}

/**
 * A typed client for one server's gRPC endpoint (`host:port`): shardlimit's own API and Envoy's
 * ShouldRateLimit over one shared channel; plaintext unless `creds` says otherwise (TLS:
 * src/security/tls.ts).
 */
export function connect(
  address: string,
  options: grpc.ChannelOptions = {},
  clock: Clock = systemClock,
  creds: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  metadata?: CallMetadata,
): RateLimiterRpc {
  const rl = new RateLimiterClient(address, creds, options);
  // Same target and options: grpc-js shares the subchannel, so this is one connection.
  const envoy = new EnvoyClient(address, creds, options);
  return {
    reportAndGetPolicy: promisify(rl, "ReportAndGetPolicy", clock, metadata),
    check: promisify(rl, "Check", clock, metadata),
    acquire: promisify(rl, "Acquire", clock, metadata),
    release: promisify(rl, "Release", clock, metadata),
    settle: promisify(rl, "Settle", clock, metadata),
    getClusterView: promisify(rl, "GetClusterView", clock, metadata),
    getLimits: promisify(rl, "GetLimits", clock, metadata),
    shouldRateLimit: promisify(envoy, "ShouldRateLimit", clock, metadata),
    reportPool: promisify(rl, "ReportPool", clock, metadata),
    inspect: promisify(rl, "Inspect", clock, metadata),
    close() {
      rl.close();
      envoy.close();
    },
  };
}
