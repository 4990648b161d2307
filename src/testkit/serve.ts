import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Child, spawnChild, waitReady } from "./child.js";
import { freePort } from "./ports.js";

/** The CLI next to this module: dist/cli/main.js when built, src/cli/main.ts under tsx. */
const CLI = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const ext = import.meta.url.endsWith(".ts") ? "ts" : "js";
  return path.join(here, "..", "cli", `main.${ext}`);
})();

/** Runs this package's CLI in a child process (with this process's node flags, e.g. tsx). */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SHARDLIMIT_")));
  return spawnChild(process.execPath, [...process.execArgv, CLI, ...args], { ...base, ...env });
}

export interface ServerProcess {
  readonly id: string;
  readonly address: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  child: Child | undefined;
  pid(): number | undefined;
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function writeTempConfig(yaml: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "shardlimit-bench-"));
  const file = path.join(dir, "limits.yaml");
  writeFileSync(file, yaml);
  return file;
}

/**
 * A `shardlimit serve` process on free loopback ports: standalone, or a cluster member with
 * `etcdUrl`. Ready when it logs that it serves.
 */
export async function serverProcess(opts: {
  id: string;
  configPath: string;
  etcdUrl?: string;
  prefix?: string;
  extraArgs?: string[];
}): Promise<ServerProcess> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const args = [
    "serve",
    "--config",
    opts.configPath,
    "--grpc-host",
    "127.0.0.1",
    "--http-host",
    "127.0.0.1",
    "--grpc-port",
    String(grpcPort),
    "--http-port",
    String(httpPort),
    "--log-level",
    "info",
    ...(opts.etcdUrl
      ? [
          "--etcd",
          opts.etcdUrl,
          "--prefix",
          opts.prefix ?? "/shardlimit-bench/",
          "--id",
          opts.id,
          "--lease-ttl",
          "2",
        ]
      : []),
    ...(opts.extraArgs ?? []),
  ];
  const s: ServerProcess = {
    id: opts.id,
    address: `127.0.0.1:${grpcPort}`,
    grpcPort,
    httpPort,
    child: undefined,
    pid: () => s.child?.pid,
    async start() {
      const c = spawnCli(args);
      s.child = c;
      await waitReady(
        c,
        `server ${opts.id}`,
        () => c.lines.some((l) => l.includes('"shardlimit serving"')),
        30_000,
      );
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      await s.child?.stop(signal);
    },
  };
  return s;
}

/** Waits until every server answers /readyz with 200. */
export async function waitAllReady(servers: readonly ServerProcess[], timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(
      servers.map((s) =>
        fetch(`http://127.0.0.1:${s.httpPort}/readyz`).then(
          (r) => r.status === 200,
          () => false,
        ),
      ),
    );
    if (states.every(Boolean)) return;
    if (Date.now() > until) throw new Error(`servers not ready within ${timeoutMs} ms: ${states}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
