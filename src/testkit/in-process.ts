import { pino } from "pino";
import { type RunningServer, startServer } from "../app/serve.js";
import type { Clock } from "../core/clock.js";
import type { InputLimits } from "../protocol/input-limits.js";
import type { ServerTlsOptions } from "../security/tls.js";

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
      rlqsConfigPath: opts.rlqsConfigPath,
    },
    pino({ level: opts.logLevel ?? "silent" }),
    { clock: opts.clock },
  );
}
