import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ServiceError } from "@grpc/grpc-js";
import { pino } from "pino";
import { type RunningServer, startServer } from "../../src/app/serve.js";
import { resolveKey } from "../../src/config/config.js";
import type { Clock } from "../../src/core/clock.js";
import type { Decision } from "../../src/core/engine.js";
import type { InputLimits } from "../../src/protocol/input-limits.js";
import type { EnvoyDescriptor } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";

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

/** A config file in a fresh temp dir. */
export function writeConfig(yaml: string, dir = mkdtempSync(path.join(tmpdir(), "shardlimit-"))): string {
  const file = path.join(dir, "config.yaml");
  writeFileSync(file, yaml);
  return file;
}

/** An in-process standalone server on ephemeral loopback ports, with a connected client. */
export async function startTestServer(
  yaml: string,
  opts: { clock?: Clock; limits?: InputLimits; maxCounters?: number } = {},
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
      maxCounters: opts.maxCounters,
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
 * Polls `cond` until it returns true, failing with `what` after `timeoutMs`. For conditions
 * that only real time can bring about (file watchers, child processes); never a fixed sleep.
 */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await cond();
    } catch {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
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

/** GET `url`: status and body (never throws on HTTP error statuses). */
export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

/** The repository root (test/server/../..). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The built command line, as installed: `shardlimit` is `node dist/cli/main.js`. */
export const CLI = path.join(REPO_ROOT, "dist/cli/main.js");

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Builds dist/ unless it is newer than every file in src/. */
export function ensureBuilt(): void {
  const built = existsSync(CLI) ? statSync(CLI).mtimeMs : 0;
  if (built > newestMtime(path.join(REPO_ROOT, "src"))) return;
  const r = spawnSync("npm", ["run", "build"], { cwd: REPO_ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`npm run build failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
}

export interface CliProcess {
  readonly child: ChildProcess;
  /** stdout so far, split into lines. */
  readonly lines: string[];
  /** stderr so far. */
  stderr(): string;
  /** Resolves with the first stdout line (from index `from`) that is JSON and passes `pred`. */
  waitForLog(
    what: string,
    pred: (log: Record<string, unknown>) => boolean,
    opts?: { from?: number; timeoutMs?: number },
  ): Promise<{ log: Record<string, unknown>; index: number }>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

/** This process's environment without SHARDLIMIT_* (a developer's own settings), plus `env`. */
function cliEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SHARDLIMIT_")));
  return { ...base, ...env };
}

/** Runs the built CLI with `args`; `killAllCli()` in an after hook ends whatever is left. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: REPO_ROOT,
    env: cliEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  const lines: string[] = [];
  let partial = "";
  let stderr = "";
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of waiters) w();
  };
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    notify();
  });
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  exited.then(notify);
  let done = false;
  exited.then(() => {
    done = true;
  });

  function waitForLog(
    what: string,
    pred: (log: Record<string, unknown>) => boolean,
    opts: { from?: number; timeoutMs?: number } = {},
  ): Promise<{ log: Record<string, unknown>; index: number }> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    let next = opts.from ?? 0;
    return new Promise((resolve, reject) => {
      const finish = (err?: Error, hit?: { log: Record<string, unknown>; index: number }) => {
        clearTimeout(timer);
        waiters.delete(scan);
        if (err) reject(err);
        else resolve(hit!);
      };
      const scan = () => {
        for (; next < lines.length; next++) {
          let log: Record<string, unknown>;
          try {
            log = JSON.parse(lines[next]!) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (pred(log)) return finish(undefined, { log, index: next });
        }
        if (done) finish(new Error(`the process exited before logging ${what}; stderr:\n${stderr}`));
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${stderr}`)),
        timeoutMs,
      );
      waiters.add(scan);
      scan();
    });
  }

  return { child, lines, stderr: () => stderr, waitForLog, exited };
}

/** Kills every CLI process still running (SIGKILL) and waits for them to go. */
export async function killAllCli(): Promise<void> {
  const left = [...running];
  await Promise.all(
    left.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
}

/** Runs the built CLI to completion. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: REPO_ROOT,
    env: cliEnv(env),
    encoding: "utf8",
    timeout: 15_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
