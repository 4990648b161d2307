import type client from "prom-client";
import { systemClock } from "../core/clock.js";
import { OptionsError } from "../core/errors.js";
import { type ClientTlsOptions, clientTls } from "../security/tls.js";
import { bearerMetadata, TokenFile } from "../security/token-file.js";
import { GatewayLimiter, type GatewayLimiterOptions } from "./gateway-limiter.js";
import { GrpcTransport } from "./grpc-transport.js";
import { registerClientMetrics } from "./metrics.js";

export interface LimiterOptions
  extends Omit<GatewayLimiterOptions, "transport" | "clock" | "closeTransport">,
    Partial<Pick<GatewayLimiterOptions, "transport" | "clock">> {
  /** How long to wait for a server to hand out the limits and the assignment (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Registers the client's metrics here (keys in fallback, reports, units decided). */
  registry?: client.Registry;
  /**
   * TLS towards the servers: file paths (CA, and a client certificate and key for mutual TLS),
   * re-read when they change. Plaintext when absent. Not with a `transport` of your own.
   */
  tls?: ClientTlsOptions;
  /**
   * A file holding this gateway's bearer token, sent as `authorization: Bearer <token>` on every
   * call (servers with an auth file know the gateway by it). Re-read when it changes (rotation).
   * Ignored when a `transport` is passed in.
   */
  tokenFile?: string;
}

/**
 * A gateway limiter connected to shardlimit servers over gRPC. Resolves once a server has handed
 * out the limits and the assignment; rejects with NotReadyError if none does in time.
 *
 *   const limiter = await createLimiter({ servers: ["rl-0:8081"], clientId: "gw-7" });
 *   if (!limiter.decide("api/tenant=acme")) return reply(429);
 */
export async function createLimiter(options: LimiterOptions): Promise<GatewayLimiter> {
  if (options.tls && options.transport) {
    throw new OptionsError("createLimiter: `tls` applies to the built-in transport; give one or the other");
  }
  const clock = options.clock ?? systemClock;
  // Bad files (unreadable, malformed, a key not the certificate's) throw here, naming the file.
  const tls = options.tls
    ? clientTls(options.tls, {
        clock,
        log: {
          info: (obj, msg) => options.logger?.info(obj, msg),
          error: (obj, msg) => options.logger?.warn(obj, msg),
        },
      })
    : undefined;
  const token = options.tokenFile === undefined ? undefined : new TokenFile(options.tokenFile, clock);
  const limiter = new GatewayLimiter({
    ...options,
    transport: options.transport ?? new GrpcTransport({}, tls, token && bearerMetadata(token)),
    // The channels it opens itself close with it; a transport passed in belongs to the caller.
    closeTransport: options.transport === undefined,
    clock,
  });
  if (options.registry) registerClientMetrics(options.registry, limiter);
  limiter.start();
  try {
    await limiter.whenReady(options.connectTimeoutMs ?? 5000);
  } catch (err) {
    limiter.close();
    throw err;
  }
  return limiter;
}
