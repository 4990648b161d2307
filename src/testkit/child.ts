import { type ChildProcess, spawn } from "node:child_process";

/** A process this harness started; a process exit kills whatever is still running. */
export interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The last 8 KB of stdout and stderr, for error messages. */
  output(): string;
  /** Lines of stdout so far. */
  readonly lines: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` (SIGTERM by default; SIGKILL after 5 s) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export function spawnChild(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Child {
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env });
  running.add(p);
  let out = "";
  let partial = "";
  const lines: string[] = [];
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-8000);
  };
  p.stdout!.on("data", (d: Buffer) => {
    keep(d);
    const parts = (partial + d.toString()).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    if (lines.length > 10_000) lines.splice(0, lines.length - 10_000);
  });
  p.stderr!.on("data", keep);
  p.once("error", (err) => {
    out += `\nspawn ${cmd} failed: ${err.message}`;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    p.once("exit", (code, signal) => {
      running.delete(p);
      resolve({ code, signal });
    }),
  );
  return {
    child: p,
    pid: p.pid ?? -1,
    output: () => out,
    lines,
    exited,
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
  const until = Date.now() + timeoutMs;
  let exited = false;
  c.exited.then(() => {
    exited = true;
  });
  while (Date.now() < until) {
    if (exited) throw new Error(`${what} exited while starting:\n${c.output()}`);
    try {
      if (await ready()) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not ready within ${timeoutMs} ms:\n${c.output()}`);
}
