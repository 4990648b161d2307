import { pino } from "pino";
import { type RunningServer, startServer } from "../../src/server/app.js";

/** A standalone server in this process on free loopback ports, logging warnings only. */
export function startLoopbackServer(configPath: string): Promise<RunningServer> {
  return startServer(
    {
      configPath,
      grpcHost: "127.0.0.1",
      grpcPort: 0,
      httpHost: "127.0.0.1",
      httpPort: 0,
      shutdownGraceMs: 500,
    },
    pino({ level: "warn" }),
  );
}
