import type { ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll } from "vitest";
import type { RunningServer } from "../../src/app/serve.js";
import { resolveKey } from "../../src/config/config.js";
import type { Clock } from "../../src/core/clock.js";
import type { Decision } from "../../src/core/decision.js";
import type { InputLimits } from "../../src/protocol/input-limits.js";
import type { EnvoyDescriptor } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import type { Child } from "../../src/testkit/child.js";
import { spawnCli } from "../../src/testkit/cli.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";

export interface TestServer {
  server: RunningServer;
  rpc: RateLimiterRpc;
  configPath: string;
  httpUrl: string;
  stop(): Promise<void>;
}

/**
 * Midnight UTC, 1 January 2030: a whole number of seconds, minutes, hours and days since the epoch,
 * so fixed windows (aligned to the epoch) start exactly here. Tests add offsets to it.
 */
export const T0 = Date.UTC(2030, 0, 1);

/** An in-process standalone server on ephemeral loopback ports, with a connected client. */
export async function startTestServer(
  yaml: string,
  opts: { clock?: Clock; limits?: InputLimits; maxCounters?: number } = {},
): Promise<TestServer> {
  const configPath = writeConfig(yaml);
  const server = await startLoopbackServer(configPath, opts);
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

/**
 * A test server for the enclosing `describe` block: started before its tests (handed to `set`),
 * stopped after them.
 */
export function useTestServer(
  yaml: string,
  opts: Parameters<typeof startTestServer>[1],
  set: (t: TestServer) => void,
): void {
  let t: TestServer | undefined;
  beforeAll(async () => {
    t = await startTestServer(yaml, opts);
    set(t);
  });
  afterAll(async () => {
    await t?.stop();
  });
}

/** The gRPC error a call failed with; fails the test if the call succeeded. */
export async function callError(p: Promise<unknown>): Promise<ServiceError> {
  let result: unknown;
  try {
    result = await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error(`expected the call to fail, but it answered ${JSON.stringify(result)}`);
}

/** An Envoy descriptor from `key=value` strings, in order. */
export function desc(...pairs: string[]): EnvoyDescriptor {
  return {
    entries: pairs.map((p) => {
      const eq = p.indexOf("=");
      if (eq < 0) throw new Error(`desc: ${p} is not key=value`);
      return { key: p.slice(0, eq), value: p.slice(eq + 1) };
    }),
  };
}

/**
 * The state of a counter key as a zero-cost decision would see it, read straight from the engine
 * (changes nothing). `undefined` when no limit applies to the key.
 */
export function peek(t: TestServer, key: string, now: number): Decision | undefined {
  const r = resolveKey(t.server.limiter.config, key);
  if (typeof r === "string") throw new Error(`peek: ${key}: ${r}`);
  return r && t.server.engine.peek(r.counterKey, r.rule, now);
}

/**
 * Some fields of a decoded message as a plain object. Decoded protobufs keep defaults (0, "",
 * null) on the prototype, which `toMatchObject` does not see, and encoders may leave zeros out.
 */
export function pick<T extends object, K extends keyof T>(msg: T, ...keys: K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) out[k] = msg[k];
  return out;
}

/** Runs the built CLI with `args` (node dist/cli/main.js, as installed), keeping all its output. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  return spawnCli(args, { env, cli: "built" });
}
