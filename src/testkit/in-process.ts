import { pino } from "pino";
import { type RunningServer, type ServeOptions, startServer } from "../app/serve.js";
import type { LimitConfig } from "../config/types.js";
import { type Clock, systemClock } from "../core/clock.js";
import { Engine } from "../core/engine.js";
import { DEFAULT_INPUT_LIMITS, type InputLimits } from "../protocol/input-limits.js";
import type { ServerTlsOptions } from "../security/tls.js";
import { EnvoyRateLimit } from "../server/envoy.js";
import { TRANSPORTS, type Transport } from "../server/lean.js";
import { Limiter } from "../server/limiter.js";
import { noopMetrics } from "../server/metrics.js";
import type { Ownership } from "../server/ownership.js";
import { type Forwarder, Router } from "../server/router.js";

/**
 * A standalone server in this process on free loopback ports: the tests' server (silent, with
 * an injected clock or limits) and the benchmarks' (logging warnings) are this one.
 */
export function startLoopbackServer(
  configPath: string,
  opts: {
    logLevel?: string;
    clock?: Clock;
    limits?: InputLimits;
    maxCounters?: number;
    /** TLS on its gRPC port. */
    tls?: ServerTlsOptions;
    /** More serve options (`authFile`, `limitsRead`, `reflection`...). */
    serve?: Partial<ServeOptions>;
    /** OpenTelemetry spans (`serve --otel`). */
    tracing?: boolean;
    /** Serve Envoy's RLQS with this bucket mapping file. */
    rlqsConfigPath?: string;
  } = {},
): Promise<RunningServer> {
  return startServer(
    {
      configPath,
      grpcHost: "127.0.0.1",
      grpcPort: 0,
      httpHost: "127.0.0.1",
      httpPort: 0,
      limits: opts.limits,
      maxCounters: opts.maxCounters,
      shutdownGraceMs: 500,
      tls: opts.tls,
      tracing: opts.tracing,
      ...transportFromEnv(),
      ...opts.serve,
      rlqsConfigPath: opts.rlqsConfigPath,
    },
    pino({ level: opts.logLevel ?? "silent" }),
    { clock: opts.clock },
  );
}

/**
 * A server's request path without its listeners or wiring: `Limiter`, `EnvoyRateLimit` and
 * `Router` over a fresh engine, on `ownership` (and a forwarder, for keys it does not own). For
 * tests and benchmarks that drive the handlers directly or put them behind their own gRPC server.
 */
export function requestPath(
  config: LimitConfig,
  ownership: Ownership,
  opts: { clock?: Clock; forwarder?: Forwarder } = {},
): { limiter: Limiter; envoy: EnvoyRateLimit; router: Router } {
  const clock = opts.clock ?? systemClock;
  const deps = { engine: new Engine(), clock, ownership, limits: DEFAULT_INPUT_LIMITS, metrics: noopMetrics };
  const limiter = new Limiter({ ...deps, config });
  const envoy = new EnvoyRateLimit(
    { ...deps, why: limiter.why },
    (d, e) => config.resolve(d, e),
    (d) => config.domains.includes(d),
  );
  const router = new Router({ limiter, envoy, ownership, clock, forwarder: opts.forwarder });
  return { limiter, envoy, router };
}

/**
 * `SHARDLIMIT_TRANSPORT=lean|grpc-js` runs the in-process test servers on that transport (the
 * server tests are run on each); unset, the server's default.
 */
function transportFromEnv(): { transport?: Transport } {
  const t = process.env.SHARDLIMIT_TRANSPORT;
  if (t === undefined || t === "") return {};
  if (!(TRANSPORTS as readonly string[]).includes(t)) {
    throw new Error(`SHARDLIMIT_TRANSPORT is "${t}"; it must be one of ${TRANSPORTS.join(", ")}`);
  }
  return { transport: t as Transport };
}
