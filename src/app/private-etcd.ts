import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Logger } from "pino";
import { type Clock, sleep } from "../core/clock.js";

/** How long a private etcd may take to answer /health before `serve --workers` gives up. */
const ETCD_START_MS = 15_000;

export interface PrivateEtcd {
  /** Client URL on loopback, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  /** Resolves when the process ends (with its exit code; null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Stops it (SIGTERM) and removes its data directory. */
  stop(): Promise<void>;
}

/** A port the OS has free now on loopback (listen on 0, close): the private etcd binds it at once. */
function loopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`);
    return ((await res.json()) as { health?: string }).health === "true";
  } catch {
    return false;
  }
}

/**
 * A single-member etcd of this host's own (`etcd` from PATH), on loopback ports with a temporary
 * data directory, for `serve --workers N` without `--etcd`: the workers of one standalone server
 * coordinate through it as the members of a cluster do. Its data is scratch: a standalone server
 * keeps nothing across restarts.
 */
export async function startPrivateEtcd(clock: Clock, log: Logger): Promise<PrivateEtcd> {
  const clientPort = await loopbackPort();
  const peerPort = await loopbackPort();
  const dataDir = mkdtempSync(path.join(tmpdir(), "shardlimit-workers-etcd-"));
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  let child: ChildProcess;
  let stderr = "";
  const exited = new Promise<number | null>((resolve, reject) => {
    // Through a shell that ends etcd when its stdin closes: on `stop`, and when this process dies
    // however it dies (even SIGKILL), so no etcd outlives the server; then it removes the data
    // directory and exits with etcd's code.
    child = spawn(
      "/bin/sh",
      [
        "-c",
        // The shell's own stderr goes to /dev/null once etcd has the pipe: with this process gone,
        // a word from the shell (a job's "Terminated") on the broken pipe would kill it with
        // SIGPIPE before it removed the data directory. It ignores INT, TERM and HUP too (etcd,
        // started before, does not): a signal to the whole process group (Ctrl-C in a terminal, a
        // group kill) ends etcd, and the shell still waits for it and removes the directory.
        'dir=$1; shift; exec 3<&0; etcd "$@" </dev/null & pid=$!; exec 2>/dev/null; trap "" PIPE INT TERM HUP; (read _ <&3; kill $pid) & wait $pid; rc=$?; rm -rf "$dir"; exit $rc',
        "sh",
        dataDir,
        "--name=workers",
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${url}`,
        `--advertise-client-urls=${url}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=workers=${peer}`,
        "--log-level=error",
      ],
      { stdio: ["pipe", "ignore", "pipe"] },
    );
    // etcd's raft logs ignore --log-level: kept (the last 4 KB) for an error, not printed.
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4096);
    });
    child.once("error", reject);
    child.once("exit", (code) => resolve(code));
  });
  const removeData = () => rmSync(dataDir, { recursive: true, force: true });
  // However this process ends short of SIGKILL (process.exit on a path that did not stop etcd, an
  // uncaught error), the directory goes with it; the shell removes it too once etcd has ended.
  process.once("exit", removeData);
  const stop = async () => {
    child.stdin?.end();
    await exited.catch(() => null);
    removeData();
    process.off("exit", removeData);
  };
  let failed: Error | undefined;
  exited.then(
    (code) => {
      failed =
        code === 127 // the shell's "command not found"
          ? new Error(
              "--workers above 1 without --etcd needs `etcd` on PATH (Debian: apt-get install etcd-server), or use --workers 1",
            )
          : new Error(`the private etcd exited (code ${code}) before it was ready:\n${stderr}`);
    },
    (err: Error) => {
      failed = err;
    },
  );
  const t0 = clock.elapsed();
  while (!(await healthy(url))) {
    if (failed) {
      removeData();
      process.off("exit", removeData);
      throw failed;
    }
    if (clock.elapsed() - t0 > ETCD_START_MS) {
      await stop();
      throw new Error(`the private etcd at ${url} did not become healthy within ${ETCD_START_MS} ms`);
    }
    await sleep(clock, 50, { ref: true });
  }
  log.info({ etcd: url, dataDir }, "private etcd for the workers started");
  return { url, exited: exited.catch(() => null), stop };
}
