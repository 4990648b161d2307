import type http from "node:http";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import client from "prom-client";
import { createLimiter } from "../client/create.js";
import { formatGatewayInspection, type GatewayLimiter } from "../client/gateway-limiter.js";
import type { HostGuardOptions } from "../client/host-guard.js";
import { type Clock, sleep, systemClock } from "../core/clock.js";
import type { InputLimits } from "../protocol/input-limits.js";
import { ENVOY_RLS_SERVICE, serviceDefinition } from "../protocol/proto.js";
import { type ClientTlsOptions, type ServerTlsOptions, serverTls } from "../security/tls.js";
import { bearerMetadata, TokenFile } from "../security/token-file.js";
import type { EnvoyOptions } from "../server/envoy-options.js";
import { unary } from "../server/grpc.js";
import { startHttp } from "../server/http.js";
import { keyEndpoint } from "../server/inspect.js";
import { EnvoySidecar } from "../sidecar/sidecar.js";

/**
 * `shardlimit sidecar` wired: an embedded gateway client, a gRPC server answering Envoy's
 * ShouldRateLimit (and health) from it, and optionally /metrics, /healthz, /readyz.
 */
export interface SidecarOptions {
  /** host:port to answer Envoy on (loopback next to Envoy). */
  listen: string;
  servers: string[];
  clientId: string;
  reportIntervalMs: number;
  /** /metrics, /healthz, /readyz; 0 = an ephemeral port, undefined = none. */
  httpPort?: number;
  limits: InputLimits;
  log: Logger;
  connectTimeoutMs?: number;
  /** The system clock unless a test brings its own. */
  clock?: Clock;
  /** TLS towards the servers (files re-read when they change); plaintext when absent. */
  tls?: ClientTlsOptions;
  /** TLS on the Envoy listener (`peerServerName` unused: the sidecar has no peers). */
  listenTls?: ServerTlsOptions;
  /** A file holding the sidecar's bearer token for the servers (`--token-file`), re-read on change. */
  tokenFile?: string;
  /** Sheds requests by priority class while the host is loaded (`--host-guard-*`). */
  hostGuard?: HostGuardOptions;
  /** envoyproxy/ratelimit's options that shape ShouldRateLimit's answer; its defaults when absent. */
  envoy?: EnvoyOptions;
}

export interface RunningSidecar {
  limiter: GatewayLimiter;
  grpcPort: number;
  httpPort: number | undefined;
  stop(): Promise<void>;
}

/** How long a sidecar waits at start-up for a server to hand out the limits and the assignment. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export async function startSidecar(opts: SidecarOptions): Promise<RunningSidecar> {
  const { log } = opts;
  const clock = opts.clock ?? systemClock;
  // Bad listener files stop the start before the client connects; the client's own are checked in createLimiter.
  const listenTls = opts.listenTls ? serverTls(opts.listenTls, { clock, log }) : undefined;
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const limiter = await createLimiter({
    tls: opts.tls,
    servers: opts.servers,
    clientId: opts.clientId,
    reportIntervalMs: opts.reportIntervalMs,
    registry,
    connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    clock,
    tokenFile: opts.tokenFile,
    ...(opts.hostGuard ? { hostGuard: opts.hostGuard } : {}),
    logger: {
      warn: (obj, msg) => log.warn(obj, msg),
      info: (obj, msg) => log.info(obj, msg),
    },
  }).catch((err: unknown) => {
    listenTls?.source.close();
    throw err;
  });
  const token = opts.tokenFile === undefined ? undefined : new TokenFile(opts.tokenFile, clock);
  const sidecar = new EnvoySidecar(
    limiter,
    opts.limits,
    opts.servers,
    clock,
    opts.envoy,
    token && bearerMetadata(token),
  );
  const server = new grpc.Server();
  const deps = {
    onUnexpected: (method: string, err: unknown) => log.error({ err, method }, "unexpected error"),
  };
  server.addService(serviceDefinition(ENVOY_RLS_SERVICE), {
    ShouldRateLimit: unary("ShouldRateLimit", deps, sidecar.shouldRateLimit.bind(sidecar)),
  });
  const health = new HealthImplementation({ "": "SERVING" });
  health.addToServer(server);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      opts.listen,
      listenTls?.server ?? grpc.ServerCredentials.createInsecure(),
      (err, port) => (err ? reject(err) : resolve(port)),
    ),
  );
  let httpServer: http.Server | undefined;
  let httpPort: number | undefined;
  if (opts.httpPort !== undefined) {
    // `/inspect?key=...`: why this gateway admits or rejects a key now (its fallback included).
    const inspect = keyEndpoint((key) => limiter.inspect(key), formatGatewayInspection);
    const h = await startHttp(
      { registry, ready: () => limiter.ready, log, inspect },
      "127.0.0.1",
      opts.httpPort,
    );
    httpServer = h.server;
    httpPort = h.port;
  }
  log.info(
    { listen: opts.listen, port: grpcPort, servers: opts.servers, tls: listenTls !== undefined },
    "sidecar answering ShouldRateLimit",
  );
  return {
    limiter,
    grpcPort,
    httpPort,
    async stop() {
      limiter.flush();
      await new Promise<void>((r) => server.tryShutdown(() => r()));
      httpServer?.close();
      sidecar.close();
      listenTls?.source.close();
      // Let the last reports leave before the channels close (ref'd, as before: this wait must end).
      await sleep(clock, 50, { ref: true });
      limiter.close();
    },
  };
}
