import { writeFileSync } from "node:fs";
import path from "node:path";
import type { Child } from "./child.js";
import { type CliOptions, spawnCli } from "./cli.js";
import { freePort } from "./ports.js";
import { tempDir } from "./temp-dir.js";
import { waitFor } from "./wait.js";

/** A config file (config.yaml) in a fresh temp dir, or in `dir`. */
export function writeConfig(yaml: string, dir = tempDir("shardlimit-")): string {
  const file = path.join(dir, "config.yaml");
  writeFileSync(file, yaml);
  return file;
}

export interface ServeArgs {
  /** Left out for servers that take their limits from etcd (`--limits-from etcd` in extraArgs). */
  configPath: string | undefined;
  grpcPort: number;
  httpPort: number;
  /** The gRPC listen (and advertised) address: 127.0.0.1 unless given (another loopback address, e.g. 127.0.0.2). */
  grpcHost?: string;
  /** Left to serve's default when not given. */
  logLevel?: string;
  /** A cluster member on this etcd. */
  etcd?: { url: string; prefix: string; id: string; leaseTtlSeconds?: number };
  extraArgs?: readonly string[];
}

/** The one place `shardlimit serve`'s command line is written: loopback ports, optional etcd. */
export function serveArgs(o: ServeArgs): string[] {
  return [
    "serve",
    ...(o.configPath !== undefined ? ["--config", o.configPath] : []),
    "--grpc-host",
    o.grpcHost ?? "127.0.0.1",
    "--http-host",
    "127.0.0.1",
    "--grpc-port",
    String(o.grpcPort),
    "--http-port",
    String(o.httpPort),
    ...(o.logLevel !== undefined ? ["--log-level", o.logLevel] : []),
    ...(o.etcd
      ? [
          "--etcd",
          o.etcd.url,
          "--prefix",
          o.etcd.prefix,
          "--id",
          o.etcd.id,
          ...(o.etcd.leaseTtlSeconds !== undefined ? ["--lease-ttl", String(o.etcd.leaseTtlSeconds)] : []),
        ]
      : []),
    ...(o.extraArgs ?? []),
  ];
}

export interface ServerProcess {
  readonly id: string;
  readonly address: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  child: Child | undefined;
  pid(): number | undefined;
  /** Starts (or restarts, on the same ports) the process and waits until it is ready. */
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface ServerProcessOptions {
  id: string;
  /** Left out with `--limits-from etcd` in extraArgs. */
  configPath: string | undefined;
  etcdUrl?: string;
  prefix?: string;
  /** 2 s by default for a cluster member (failures show quickly); `null` leaves serve's default. */
  leaseTtlSeconds?: number | null;
  /** info by default: readiness is read from the "shardlimit serving" log line. */
  logLevel?: string;
  extraArgs?: string[];
  /** gRPC on this loopback address instead of 127.0.0.1 (see `ServeArgs.grpcHost`). */
  grpcHost?: string;
  /** Added to the process's environment (e.g. a `ConnectProxy`'s `env`). */
  env?: NodeJS.ProcessEnv;
  /**
   * When `start()` returns: `serving` (default) once it logs "shardlimit serving"; `spawned` at
   * once, for servers that serve only after something else happens (`--no-assigner` members
   * wait for an assignment the caller writes).
   */
  ready?: "serving" | "spawned";
  readyTimeoutMs?: number;
  /** Which CLI runs it and how (see `spawnCli`). */
  cli?: CliOptions["cli"];
  onLine?: (line: string) => void;
}

/**
 * A `shardlimit serve` process on free loopback ports (chosen once, so a restart keeps them):
 * standalone, or a cluster member with `etcdUrl`.
 */
export async function serverProcess(opts: ServerProcessOptions): Promise<ServerProcess> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const args = serveArgs({
    configPath: opts.configPath,
    grpcPort,
    httpPort,
    grpcHost: opts.grpcHost,
    logLevel: opts.logLevel ?? "info",
    etcd: opts.etcdUrl
      ? {
          url: opts.etcdUrl,
          prefix: opts.prefix ?? "/shardlimit-bench/",
          id: opts.id,
          leaseTtlSeconds: opts.leaseTtlSeconds === null ? undefined : (opts.leaseTtlSeconds ?? 2),
        }
      : undefined,
    extraArgs: opts.extraArgs,
  });
  const s: ServerProcess = {
    id: opts.id,
    address: `${opts.grpcHost ?? "127.0.0.1"}:${grpcPort}`,
    grpcPort,
    httpPort,
    child: undefined,
    pid: () => s.child?.pid,
    async start() {
      const c = spawnCli(args, { cli: opts.cli, onLine: opts.onLine, env: opts.env });
      s.child = c;
      if (opts.ready === "spawned") return;
      await c.waitForLog(`server ${opts.id} serving`, (l) => l.msg === "shardlimit serving", {
        timeoutMs: opts.readyTimeoutMs ?? 30_000,
      });
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      await s.child?.stop(signal);
    },
  };
  return s;
}

/** Waits until every server answers /readyz with 200. */
export async function waitAllReady(servers: readonly ServerProcess[], timeoutMs = 20_000): Promise<void> {
  let states: boolean[] = [];
  await waitFor(
    "every server to answer /readyz 200",
    async () => {
      states = await Promise.all(
        servers.map((s) =>
          fetch(`http://127.0.0.1:${s.httpPort}/readyz`).then(
            (r) => r.status === 200,
            () => false,
          ),
        ),
      );
      return states.every(Boolean);
    },
    timeoutMs,
    100,
  ).catch(() => {
    throw new Error(`servers not ready within ${timeoutMs} ms: ${states}`);
  });
}
