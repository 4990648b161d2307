import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll } from "vitest";

/** A free loopback TCP port (bound once, released, handed out). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface EtcdProcess {
  /** Client URL, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  readonly dataDir: string;
  /** Stops the process, keeping its data dir so `start` brings the same member back. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

async function waitHealthy(url: string, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  let last = "";
  while (Date.now() < until) {
    try {
      const res = await fetch(`${url}/health`);
      const body = (await res.json()) as { health?: string };
      if (body.health === "true") return;
      last = JSON.stringify(body);
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`etcd at ${url} not healthy within ${deadlineMs} ms (${last})`);
}

/**
 * A real single-member etcd (from PATH) on free loopback ports with a temporary data dir.
 * Always `destroy()` it (afterAll); a process exit kills any still running.
 */
export async function startEtcd(): Promise<EtcdProcess> {
  const clientPort = await freePort();
  const peerPort = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), "shardlimit-etcd-"));
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name=test",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=test=${peer}`,
    "--log-level=error",
  ];
  let child: ChildProcess | undefined;
  let output = "";
  const start = async () => {
    output = "";
    const p = spawn("etcd", args, { stdio: ["ignore", "pipe", "pipe"] });
    child = p;
    running.add(p);
    p.stdout!.on("data", (d: Buffer) => {
      output = (output + d.toString()).slice(-4000);
    });
    p.stderr!.on("data", (d: Buffer) => {
      output = (output + d.toString()).slice(-4000);
    });
    const exited = new Promise<never>((_, reject) =>
      p.once("exit", (code) => reject(new Error(`etcd exited with ${code} while starting:\n${output}`))),
    );
    p.once("error", (err) => {
      output += `\nspawn failed: ${err.message} (is etcd installed? Debian: apt-get install etcd-server)`;
    });
    await Promise.race([waitHealthy(url, 15_000), exited]);
  };
  const stop = async () => {
    const p = child;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once("exit", () => resolve());
      p.kill("SIGTERM");
      setTimeout(() => p.kill("SIGKILL"), 5000).unref();
    });
    running.delete(p);
  };
  await start();
  return {
    url,
    dataDir,
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TcpProxy {
  /** http://127.0.0.1:PORT, to give a client instead of the etcd URL. */
  readonly url: string;
  /** Drops every connection and refuses new ones: the client is cut off while etcd runs on. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** A loopback TCP proxy to `targetUrl` that a test can cut, to partition one client from etcd. */
export async function startProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let open = true;
  const server = net.createServer((down) => {
    if (!open) {
      down.destroy();
      return;
    }
    const up = net.connect(Number(target.port), target.hostname);
    sockets.add(down);
    sockets.add(up);
    const drop = () => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on("error", drop).on("close", drop);
    up.on("error", drop).on("close", drop);
    down.pipe(up);
    up.pipe(down);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * One etcd for the enclosing `describe` block: started before its tests, destroyed after them,
 * with every client made by `client()` closed first.
 */
export function etcdPerSuite(): { etcd(): EtcdProcess; client(hosts?: string): Etcd3 } {
  let etcd: EtcdProcess | undefined;
  const clients: Etcd3[] = [];
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await etcd?.destroy();
  });
  return {
    etcd: () => etcd!,
    client(hosts) {
      const c = new Etcd3({ hosts: hosts ?? etcd!.url });
      clients.push(c);
      return c;
    },
  };
}
