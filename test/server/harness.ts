import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { connect, type RateLimiterRpc } from "../../src/client/rpc.js";
import type { Clock } from "../../src/core/clock.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import type { InputLimits } from "../../src/server/input-limits.js";

export interface TestServer {
  server: RunningServer;
  rpc: RateLimiterRpc;
  configPath: string;
  httpUrl: string;
  stop(): Promise<void>;
}

/** A config file in a fresh temp dir. */
export function writeConfig(yaml: string, dir = mkdtempSync(path.join(tmpdir(), "shardlimit-"))): string {
  const file = path.join(dir, "config.yaml");
  writeFileSync(file, yaml);
  return file;
}

/** An in-process standalone server on ephemeral loopback ports, with a connected client. */
export async function startTestServer(
  yaml: string,
  opts: { clock?: Clock; limits?: InputLimits } = {},
): Promise<TestServer> {
  const configPath = writeConfig(yaml);
  const server = await startServer(
    {
      configPath,
      grpcHost: "127.0.0.1",
      grpcPort: 0,
      httpHost: "127.0.0.1",
      httpPort: 0,
      limits: opts.limits,
      shutdownGraceMs: 500,
    },
    pino({ level: "silent" }),
    { clock: opts.clock },
  );
  const rpc = connect(`127.0.0.1:${server.grpcPort}`);
  return {
    server,
    rpc,
    configPath,
    httpUrl: `http://127.0.0.1:${server.httpPort}`,
    async stop() {
      rpc.close();
      await server.shutdown();
    },
  };
}
