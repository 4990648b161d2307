import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import type { Clock } from "../core/clock.js";
import { ERRORS, InvalidArgumentError, ShardlimitError } from "../core/errors.js";
import {
  ENVOY_RLS_SERVICE,
  MalformedRequest,
  PEER_SERVICE,
  PROTO_DIR,
  PROTO_FILES,
  RATE_LIMITER_SERVICE,
  RLQS_SERVICE,
  serviceDefinition,
} from "../protocol/proto.js";
import type { Limiter } from "./limiter.js";
import type { PromMetrics } from "./metrics.js";
import type { PeerService } from "./peer-service.js";
import type { Router } from "./router.js";

export interface GrpcDeps {
  limiter: Limiter;
  /** Check and ShouldRateLimit: decided here or passed to the owner. */
  router: Router;
  /** Server-to-server calls (cluster mode only). */
  peer?: PeerService;
  metrics?: PromMetrics;
  /** Envoy's RLQS `StreamRateLimitQuotas` (bidirectional), when configured. */
  rlqs?: grpc.UntypedHandleCall;
  maxMessageBytes: number;
  onUnexpected: (method: string, err: unknown) => void;
}

/** A thrown error as a gRPC status: ours by the error table, anything else as INTERNAL. */
function toStatus(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof ShardlimitError) return { code: ERRORS[err.code].grpc, details: err.message };
  return { code: grpc.status.INTERNAL, details: "internal error" };
}

/**
 * Wraps a handler: times it, maps thrown errors to statuses. Most handlers answer synchronously;
 * one that must ask another server (forwarding) returns a promise.
 */
export function unary<Req, Res>(
  name: string,
  deps: Pick<GrpcDeps, "metrics" | "onUnexpected">,
  /** Gets the call too: a handler that waits (Check with max_wait_ms) reads its deadline and cancellation. */
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
  /**
   * The request's method label in the duration histogram, when a method has kinds of call that
   * must not share one (a Check that waits up to 30 s would hide the others' latency).
   */
  labelOf?: (req: Req) => string,
): grpc.handleUnaryCall<Req, Res> {
  const hist = deps.metrics?.requestDuration;
  return (call, callback) => {
    const start = process.hrtime.bigint();
    let method = name;
    const fail = (err: unknown) => {
      const status = toStatus(err);
      if (status.code === grpc.status.INTERNAL) deps.onUnexpected(method, err);
      callback(status, null);
      return grpc.status[status.code!] ?? "UNKNOWN";
    };
    let code = "OK";
    try {
      const req: unknown = call.request;
      if (req instanceof MalformedRequest) {
        throw new InvalidArgumentError(`malformed ${req.type}: ${req.reason}`);
      }
      if (labelOf !== undefined) method = labelOf(req as Req);
      const out = fn(req as Req, call);
      if (out instanceof Promise) {
        out.then(
          (res) => {
            callback(null, res);
            hist?.observe({ method, code: "OK" }, Number(process.hrtime.bigint() - start) / 1e9);
          },
          (err: unknown) => {
            const c = fail(err);
            hist?.observe({ method, code: c }, Number(process.hrtime.bigint() - start) / 1e9);
          },
        );
        return;
      }
      callback(null, out);
    } catch (err) {
      code = fail(err);
    }
    hist?.observe({ method, code }, Number(process.hrtime.bigint() - start) / 1e9);
  };
}

export interface GrpcServer {
  server: grpc.Server;
  health: HealthImplementation;
  port: number;
}

/** `credentials`: TLS (src/security/tls.ts) or, by default, plaintext. */
export async function startGrpc(
  deps: GrpcDeps,
  host: string,
  port: number,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<GrpcServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": deps.maxMessageBytes,
    "grpc.max_send_message_length": deps.maxMessageBytes,
  });
  const { limiter, router, peer } = deps;
  server.addService(serviceDefinition(RATE_LIMITER_SERVICE), {
    ReportAndGetPolicy: unary(
      "ReportAndGetPolicy",
      deps,
      router.caughtUp(limiter.reportAndGetPolicy.bind(limiter)),
    ),
    Check: unary("Check", deps, router.check.bind(router), (req) =>
      req.items?.some((it) => (it.maxWaitMs ?? 0) !== 0) ? "CheckWaiting" : "Check",
    ),
    Acquire: unary("Acquire", deps, router.caughtUp(limiter.acquire.bind(limiter))),
    Release: unary("Release", deps, router.caughtUp(limiter.release.bind(limiter))),
    Settle: unary("Settle", deps, router.settle.bind(router)),
    GetClusterView: unary("GetClusterView", deps, () => limiter.clusterView()),
    GetLimits: unary("GetLimits", deps, limiter.getLimits.bind(limiter)),
  });
  server.addService(serviceDefinition(ENVOY_RLS_SERVICE), {
    ShouldRateLimit: unary("ShouldRateLimit", deps, router.shouldRateLimit.bind(router)),
  });
  if (deps.rlqs) server.addService(serviceDefinition(RLQS_SERVICE), { StreamRateLimitQuotas: deps.rlqs });
  if (peer) {
    server.addService(serviceDefinition(PEER_SERVICE), {
      Forward: unary("Forward", deps, peer.forward.bind(peer)),
      Handoff: unary("Handoff", deps, peer.handoff.bind(peer)),
      Reclaim: unary("Reclaim", deps, peer.reclaim.bind(peer)),
      Replicate: unary("Replicate", deps, peer.replicate.bind(peer)),
      Standby: unary("Standby", deps, peer.standby.bind(peer)),
    });
  }
  const health = new HealthImplementation({
    "": "NOT_SERVING",
    [RATE_LIMITER_SERVICE]: "NOT_SERVING",
    [ENVOY_RLS_SERVICE]: "NOT_SERVING",
  });
  health.addToServer(server);
  const pkg = protoLoader.loadSync(PROTO_FILES, { includeDirs: [PROTO_DIR] });
  new ReflectionService(pkg).addToServer(server);
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { server, health, port: bound };
}

export function setServing(health: HealthImplementation, serving: boolean): void {
  const status = serving ? "SERVING" : "NOT_SERVING";
  for (const s of ["", RATE_LIMITER_SERVICE, ENVOY_RLS_SERVICE]) health.setStatus(s, status);
}

/** Stops accepting calls and waits for those in flight, forcing the rest after `graceMs` on `clock`. */
export function stopGrpc(server: grpc.Server, graceMs: number, clock: Clock): Promise<void> {
  return new Promise((resolve) => {
    // Ref'd: the forced shutdown must happen even if nothing else keeps the process alive.
    const timer = clock.after(
      graceMs,
      () => {
        server.forceShutdown();
        resolve();
      },
      { ref: true },
    );
    server.tryShutdown(() => {
      timer.cancel();
      resolve();
    });
  });
}
