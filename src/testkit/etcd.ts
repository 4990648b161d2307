import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Child, spawnChild, waitReady } from "./child.js";
import { freePort } from "./ports.js";

export interface EtcdProcess {
  /** Client URL, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  readonly dataDir: string;
  /** The running process (undefined while stopped). */
  pid(): number | undefined;
  /** Stops the process, keeping its data dir so `start` brings the same member back. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

async function healthy(url: string): Promise<boolean> {
  const res = await fetch(`${url}/health`);
  const body = (await res.json()) as { health?: string };
  return body.health === "true";
}

/**
 * A real single-member etcd (from PATH) on free loopback ports with a temporary data dir.
 * Always `destroy()` it; a process exit kills any still running.
 */
export async function startEtcd(): Promise<EtcdProcess> {
  const clientPort = await freePort();
  const peerPort = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), "shardlimit-etcd-"));
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name=shardlimit",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=shardlimit=${peer}`,
    "--log-level=error",
  ];
  let child: Child | undefined;
  const start = async () => {
    child = spawnChild("etcd", args);
    await waitReady(child, "etcd (is it installed? Debian: apt-get install etcd-server)", () => healthy(url));
  };
  const stop = async () => {
    await child?.stop("SIGTERM");
    child = undefined;
  };
  await start();
  return {
    url,
    dataDir,
    pid: () => child?.pid,
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
