import { type ChildProcess, spawn } from "node:child_process";
import { waitFor } from "./wait.js";

/** A process this kit started; a process exit kills whatever is still running. */
export interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The last 8 KB of stdout and stderr, for error messages. */
  output(): string;
  /** stderr so far. */
  stderr(): string;
  /** Lines of stdout so far (the newest `maxLines` of them). */
  readonly lines: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stdout line (from index `from`) that is JSON and passes `pred`. */
  waitForLog(
    what: string,
    pred: (log: Record<string, unknown>) => boolean,
    opts?: { from?: number; timeoutMs?: number },
  ): Promise<{ log: Record<string, unknown>; index: number }>;
  /** Sends `signal` (SIGTERM by default; SIGKILL after 5 s) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Lines of stdout kept in `lines` (10,000 by default, so a long benchmark does not grow without
   * bound). Tests that index into `lines` (`waitForLog`'s `from`) keep them all: Infinity.
   */
  maxLines?: number;
  /** Called with each complete stdout line as it arrives. */
  onLine?: (line: string) => void;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export function spawnChild(cmd: string, args: string[], opts: SpawnOptions = {}): Child {
  const p = spawn(cmd, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  const maxLines = opts.maxLines ?? 10_000;
  running.add(p);
  let out = "";
  let err = "";
  let partial = "";
  const lines: string[] = [];
  // waitForLog's scans, run again whenever stdout grows or the process exits.
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of waiters) w();
  };
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-8000);
  };
  p.stdout!.on("data", (d: Buffer) => {
    keep(d);
    const parts = (partial + d.toString()).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    if (opts.onLine) for (const l of parts) opts.onLine(l);
    if (lines.length > maxLines) lines.splice(0, lines.length - maxLines);
    notify();
  });
  p.stderr!.on("data", (d: Buffer) => {
    keep(d);
    err += d.toString();
  });
  p.once("error", (e) => {
    out += `\nspawn ${cmd} failed: ${e.message}`;
  });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    p.once("exit", (code, signal) => {
      running.delete(p);
      done = true;
      resolve({ code, signal });
    }),
  );
  exited.then(notify);

  function waitForLog(
    what: string,
    pred: (log: Record<string, unknown>) => boolean,
    o: { from?: number; timeoutMs?: number } = {},
  ): Promise<{ log: Record<string, unknown>; index: number }> {
    const timeoutMs = o.timeoutMs ?? 10_000;
    let next = o.from ?? 0;
    return new Promise((resolve, reject) => {
      const finish = (e?: Error, hit?: { log: Record<string, unknown>; index: number }) => {
        clearTimeout(timer);
        waiters.delete(scan);
        if (e) reject(e);
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
        if (done) finish(new Error(`the process exited before logging ${what}; stderr:\n${err}`));
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${err}`)),
        timeoutMs,
      );
      waiters.add(scan);
      scan();
    });
  }

  return {
    child: p,
    pid: p.pid ?? -1,
    output: () => out,
    stderr: () => err,
    lines,
    exited,
    waitForLog,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const t = setTimeout(() => p.kill("SIGKILL"), 5000);
      t.unref();
      p.kill(signal);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Polls `ready` until it resolves true; fails with the child's output if it exits or times out. */
export async function waitReady(
  c: Child,
  what: string,
  ready: () => Promise<boolean> | boolean,
  timeoutMs = 15_000,
) {
  let exited = false;
  c.exited.then(() => {
    exited = true;
  });
  try {
    await waitFor(what, ready, timeoutMs, 50, () =>
      exited ? new Error(`${what} exited while starting:\n${c.output()}`) : undefined,
    );
  } catch (err) {
    if (exited) throw err;
    throw new Error(`${what} not ready within ${timeoutMs} ms:\n${c.output()}`);
  }
}
