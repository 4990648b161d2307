import * as grpc from "@grpc/grpc-js";
import type {
  AcquireRequest,
  AcquireResponse,
  CheckRequest,
  CheckResponse,
  ClusterView,
  ClusterViewRequest,
  EnvoyRequest,
  EnvoyResponse,
  Limits,
  LimitsRequest,
  ReleaseRequest,
  ReleaseResponse,
  ReportRequest,
  ReportResponse,
  SettleRequest,
  SettleResponse,
} from "./messages.js";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE, serviceDefinition } from "./proto.js";

export type Unary<Req, Res> = (req: Partial<Req>, opts?: { deadlineMs?: number }) => Promise<Res>;

export interface RateLimiterRpc {
  reportAndGetPolicy: Unary<ReportRequest, ReportResponse>;
  check: Unary<CheckRequest, CheckResponse>;
  acquire: Unary<AcquireRequest, AcquireResponse>;
  release: Unary<ReleaseRequest, ReleaseResponse>;
  settle: Unary<SettleRequest, SettleResponse>;
  getClusterView: Unary<ClusterViewRequest, ClusterView>;
  getLimits: Unary<LimitsRequest, Limits>;
  shouldRateLimit: Unary<EnvoyRequest, EnvoyResponse>;
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

export function promisify<Req, Res>(client: grpc.Client, method: string): Unary<Req, Res> {
  const fn = (client as unknown as Record<string, grpc.requestCallback<Res> & ((...a: unknown[]) => void)>)[
    method
  ]!.bind(client);
  return (req, opts) =>
    new Promise((resolve, reject) => {
      const options: grpc.CallOptions = {};
      if (opts?.deadlineMs !== undefined) options.deadline = Date.now() + opts.deadlineMs;
      fn(req, new grpc.Metadata(), options, (err: grpc.ServiceError | null, res?: Res) =>
        err ? reject(err) : resolve(res!),
      );
    });
}

/**
 * A typed client for one server's gRPC endpoint (`host:port`): shardlimit's own API and Envoy's
 * ShouldRateLimit over one shared channel.
 */
export function connect(address: string, options: grpc.ChannelOptions = {}): RateLimiterRpc {
  const creds = grpc.credentials.createInsecure();
  const rl = new RateLimiterClient(address, creds, options);
  // Same target and options: grpc-js shares the subchannel, so this is one connection.
  const envoy = new EnvoyClient(address, creds, options);
  return {
    reportAndGetPolicy: promisify(rl, "ReportAndGetPolicy"),
    check: promisify(rl, "Check"),
    acquire: promisify(rl, "Acquire"),
    release: promisify(rl, "Release"),
    settle: promisify(rl, "Settle"),
    getClusterView: promisify(rl, "GetClusterView"),
    getLimits: promisify(rl, "GetLimits"),
    shouldRateLimit: promisify(envoy, "ShouldRateLimit"),
    close() {
      rl.close();
      envoy.close();
    },
  };
}
