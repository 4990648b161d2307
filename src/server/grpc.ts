import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { type Clock, systemClock } from "../core/clock.js";
import { ERRORS, InvalidArgumentError, ShardlimitError } from "../core/errors.js";
import { ErrorCode } from "../protocol/item-errors.js";
import type {
  AcquireRequest,
  CheckRequest,
  EnvoyRequest,
  ForwardRequest,
  HandoffRequest,
  LimitsRequest,
  PoolReportRequest,
  ReclaimRequest,
  ReleaseRequest,
  ReplicateRequest,
  ReportRequest,
  SettleRequest,
  StandbyRequest,
} from "../protocol/messages.js";
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
import { callViewOf } from "../security/identity.js";
import type { Access, Caller } from "./access.js";
import { type AskOwner, inspectAnyMember, inspectResponse } from "./inspect.js";
import { installLean, type Transport } from "./lean.js";
import type { Limiter, ReportCaller } from "./limiter.js";
import type { PromMetrics } from "./metrics.js";
import type { PeerService } from "./peer-service.js";
import type { Router } from "./router.js";
import { checkAttrs, envoyAttrs, forwardAttrs, reportAttrs, traced } from "./spans.js";

export interface GrpcDeps {
  limiter: Limiter;
  /** Check and ShouldRateLimit: decided here or passed to the owner. */
  router: Router;
  /** Server-to-server calls (cluster mode only). */
  peer?: PeerService;
  metrics?: PromMetrics;
  /** Envoy's RLQS `StreamRateLimitQuotas` (bidirectional), when configured. */
  rlqs?: grpc.UntypedHandleCall;
  /** Inspect on a member that does not own the key asks the owner with this (cluster mode). */
  askOwner?: AskOwner;
  maxMessageBytes: number;
  onUnexpected: (method: string, err: unknown) => void;
  /** Who may call what (absent: everything allowed, as without an authorisation file). */
  access?: Access;
  /** gRPC server reflection (default on; `--no-reflection` turns it off). */
  reflection?: boolean;
  /** `lean` (server/lean.ts) answers the hot methods over node:http2 directly; default grpc-js. */
  transport?: Transport;
  /** Deadlines of lean calls run on it (default the system clock). */
  clock?: Clock;
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
  // The usual label set, bound once; others are looked up by the histogram.
  const ok = hist?.child(name, "OK");
  const observe = (method: string, code: string, start: number) => {
    if (hist === undefined) return;
    const secs = (performance.now() - start) / 1000;
    if (method === name && code === "OK") ok!.observe(secs);
    else hist.child(method, code).observe(secs);
  };
  return (call, callback) => {
    const start = performance.now();
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
            observe(method, "OK", start);
          },
          (err: unknown) => observe(method, fail(err), start),
        );
        return;
      }
      callback(null, out);
    } catch (err) {
      code = fail(err);
    }
    observe(method, code, start);
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
  const { limiter, router, peer, access } = deps;
  /**
   * A handler behind the authorisation check of `method` (server/access.ts): the caller is
   * identified and refused whole first, before its request is even looked at (a caller with no
   * right to a method learns nothing of how it parses); `fn` gets it for per-item checks.
   */
  const guarded = <Req, Res>(
    method: string,
    fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>, caller: Caller | undefined) => Res | Promise<Res>,
    labelOf?: (req: Req) => string,
  ): grpc.handleUnaryCall<Req, Res> => {
    if (access === undefined)
      return unary<Req, Res>(method, deps, (req, call) => fn(req, call, undefined), labelOf);
    const callers = new WeakMap<object, Caller | undefined>();
    const inner = unary<Req, Res>(method, deps, (req, call) => fn(req, call, callers.get(call)), labelOf);
    return (call, callback) => {
      let caller: Caller | undefined;
      try {
        caller = access.admit(method, callViewOf(call));
      } catch (err) {
        if (!(err instanceof ShardlimitError)) deps.onUnexpected(method, err);
        callback(toStatus(err), null);
        return;
      }
      callers.set(call, caller);
      inner(call, callback);
    };
  };
  const name = (c: Caller | undefined) => c?.identity.name;
  server.addService(serviceDefinition(RATE_LIMITER_SERVICE), {
    ReportAndGetPolicy: guarded(
      "ReportAndGetPolicy",
      traced(
        "ReportAndGetPolicy",
        (req: ReportRequest, _call, c: Caller | undefined) => {
          const run = (caller?: ReportCaller) =>
            router.caughtUp((r: ReportRequest) => limiter.reportAndGetPolicy(r, caller))(req);
          return access === undefined ? run() : access.report(c, run);
        },
        reportAttrs,
      ),
    ),
    Check: guarded(
      "Check",
      traced(
        "Check",
        (req: CheckRequest, call, c: Caller | undefined) =>
          access === undefined ? router.check(req, call) : access.check(c, req, (r) => router.check(r, call)),
        checkAttrs,
      ),
      (req) => (req.items?.some((it) => (it.maxWaitMs ?? 0) !== 0) ? "CheckWaiting" : "Check"),
    ),
    Acquire: guarded("Acquire", (req: AcquireRequest, _call, c) => {
      access?.keyDomain("Acquire", c, "check", req.key);
      return counted(
        access,
        "Acquire",
        router.caughtUp((r: AcquireRequest) => limiter.acquire(r, name(c)))(req),
      );
    }),
    Release: guarded("Release", (req: ReleaseRequest, _call, c) => {
      access?.keyDomain("Release", c, "settle", req.key);
      return counted(
        access,
        "Release",
        router.caughtUp((r: ReleaseRequest) => limiter.release(r, name(c)))(req),
      );
    }),
    Settle: guarded("Settle", (req: SettleRequest, _call, c) => {
      access?.keyDomain("Settle", c, "settle", req.key);
      if (c !== undefined) req.caller = c.identity.name;
      else delete req.caller;
      return counted(access, "Settle", router.settle(req));
    }),
    GetClusterView: guarded("GetClusterView", () => limiter.clusterView()),
    GetLimits: guarded("GetLimits", (req: LimitsRequest, _call, c) => {
      const out = limiter.getLimits(req);
      return access === undefined ? out : access.limits(c, limiter.config, req, out);
    }),
    // Backends' utilisation: under an auth file, only the pool's backends (and operators) report it.
    ReportPool: guarded("ReportPool", (req: PoolReportRequest, _call, c) => {
      access?.pool("ReportPool", c, req.pool ?? "");
      // Any server takes it: the owner of the pool's key decides (forwarded like a settle).
      return router.reportPool(req);
    }),
    // Operator-only: not in the access table, so under an auth file only operators may call it.
    Inspect: guarded("Inspect", (req: { key: string }) =>
      inspectAnyMember(limiter.inspect(req.key), req.key, deps.askOwner),
    ),
  });
  server.addService(serviceDefinition(ENVOY_RLS_SERVICE), {
    ShouldRateLimit: guarded(
      "ShouldRateLimit",
      traced(
        "ShouldRateLimit",
        (req: EnvoyRequest, call, c: Caller | undefined) => {
          access?.domain("ShouldRateLimit", c, "check", req.domain ?? "");
          return router.shouldRateLimit(req, call);
        },
        envoyAttrs,
      ),
    ),
  });
  if (deps.rlqs) {
    const rlqs = deps.rlqs as grpc.handleBidiStreamingCall<unknown, unknown>;
    // Under an auth file a stream needs a gateway allowed to report in some domain (or an
    // operator); it is refused whole before its first report is read. Per-bucket domains are not
    // checked: the bucket mapping (`--rlqs-config`) is the operator's.
    const admitted: grpc.handleBidiStreamingCall<unknown, unknown> =
      access === undefined
        ? rlqs
        : (call) => {
            try {
              access.admit("StreamRateLimitQuotas", callViewOf(call));
            } catch (err) {
              const status = toStatus(err);
              call.emit("error", {
                code: status.code,
                details: status.details,
                metadata: new grpc.Metadata(),
              });
              return;
            }
            rlqs(call);
          };
    server.addService(serviceDefinition(RLQS_SERVICE), { StreamRateLimitQuotas: admitted });
  }
  if (peer) {
    server.addService(serviceDefinition(PEER_SERVICE), {
      Forward: guarded(
        "Forward",
        traced("Forward", (req: ForwardRequest, call) => peer.forward(req, call), forwardAttrs),
      ),
      Handoff: guarded("Handoff", (req: HandoffRequest, _call, c) => {
        access?.memberId("Handoff", c, req.from);
        return peer.handoff(req);
      }),
      Reclaim: guarded("Reclaim", (req: ReclaimRequest, _call, c) => {
        access?.memberId("Reclaim", c, req.from);
        return peer.reclaim(req);
      }),
      Replicate: guarded("Replicate", (req: ReplicateRequest, _call, c) => {
        access?.memberId("Replicate", c, req.from);
        return peer.replicate(req);
      }),
      Standby: guarded("Standby", (req: StandbyRequest) => peer.standby(req)),
      // The owner's answer to a member asked by an operator: its own state only, never further.
      Inspect: guarded("Peer.Inspect", (req: { key: string }) => inspectResponse(limiter.inspect(req.key))),
    });
  }
  const health = new HealthImplementation({
    "": "NOT_SERVING",
    [RATE_LIMITER_SERVICE]: "NOT_SERVING",
    [ENVOY_RLS_SERVICE]: "NOT_SERVING",
  });
  health.addToServer(server);
  if (deps.reflection !== false) {
    const pkg = protoLoader.loadSync(PROTO_FILES, { includeDirs: [PROTO_DIR] });
    new ReflectionService(pkg).addToServer(server);
  }
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  if (deps.transport === "lean") {
    installLean(server, { clock: deps.clock ?? systemClock, maxMessageBytes: deps.maxMessageBytes });
  }
  return { server, health, port: bound };
}

/** Counts a per-item PERMISSION_DENIED answer (another identity's ticket or lease) as a refusal. */
function counted<T extends { error?: { code: number } | null }>(
  access: Access | undefined,
  method: string,
  out: T | Promise<T>,
): T | Promise<T> {
  if (access === undefined) return out;
  const see = (res: T): T => {
    if (res.error?.code === ErrorCode.PERMISSION_DENIED) access.count(method, "not_taker");
    return res;
  };
  return out instanceof Promise ? out.then(see) : see(out);
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
