import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import type { ServerTlsOptions } from "../../src/security/tls.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { BENCH_DIR, OUT_DIR } from "./common.js";
import type { ChildStats, EchoSetup, ProfileKind } from "./server-child.js";

export interface ServerStatsDelta {
  wallS: number;
  /** Server process CPU seconds (user + system, all threads) per wall second. */
  cpuPerWallS: number;
  cpuUserS: number;
  cpuSystemS: number;
  /** Fraction of wall time the server's event loop (its one JS thread) was busy. */
  eventLoopUtilization: number;
  heapUsedMB: number;
  rssMB: number;
  counters: number;
  /** Share of wall time in GC pauses on the server's main thread, minor (scavenges) and major. */
  gcMinorShare: number;
  gcMajorShare: number;
  gcMinorPerSec: number;
  gcMajorPerSec: number;
  gcMaxPauseMs: number;
  /** Longest delay of the server's event loop in the window (a stall of this long happened). */
  loopDelayMaxMs: number;
}

export interface BenchServer {
  pid: number;
  address: string;
  httpPort: number;
  /** Which CPU the server is pinned to, if any. */
  pinnedCpu: string | undefined;
  stats(): Promise<ChildStats & { at: bigint }>;
  /** Starts V8's sampling CPU profiler (every 250 µs) or sampling heap profiler in the server. */
  profileStart(kind?: ProfileKind): Promise<void>;
  /** Stops it; resolves to the .cpuprofile / .heapprofile written under bench/out/prof. */
  profileStop(name: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** A shardlimit server with this config, or the echo server (transport floor) answering these. */
  config?: string;
  echo?: Record<string, Buffer>;
  /** Pin the server to this CPU and the calling process to the others (taskset). */
  pin: boolean;
  /** The shardlimit server's TLS (config mode only). */
  tls?: ServerTlsOptions;
}

function hasTaskset(): boolean {
  try {
    execFileSync("taskset", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export const PROFILE_DIR = path.join(OUT_DIR, "prof");

/**
 * Starts bench/lib/server-child.ts in its own node process (so it has its own thread and core)
 * and waits until it serves. With `pin` on a machine of 2+ CPUs, the server gets the last CPU
 * and this (load-generating) process all the others, so neither steals the other's core.
 */
export async function spawnServer(opts: SpawnOptions): Promise<BenchServer> {
  const modeArgs = ["echo"];
  if (opts.config !== undefined) {
    modeArgs.splice(0, 1, "serve", writeConfig(opts.config));
  } else if (opts.echo === undefined) throw new Error("spawnServer: give a config or echo responses");
  // Extra V8/node flags for the server only, e.g. BENCH_SERVER_NODE_FLAGS="--trace-gc".
  const extra = (process.env.BENCH_SERVER_NODE_FLAGS ?? "").split(" ").filter((f) => f !== "");
  const nodeArgs = [...extra, "--import", import.meta.resolve("tsx")];
  const script = path.join(BENCH_DIR, "lib", "server-child.ts");
  const ncpu = Number(execFileSync("nproc").toString().trim());
  let pinnedCpu: string | undefined;
  let child: ChildProcess;
  const stdio: ("ignore" | "inherit" | "ipc")[] = ["ignore", "inherit", "inherit", "ipc"];
  const env = opts.tls ? { ...process.env, BENCH_SERVER_TLS: JSON.stringify(opts.tls) } : process.env;
  if (opts.pin && ncpu >= 2 && hasTaskset()) {
    pinnedCpu = String(ncpu - 1);
    // taskset execs node, so the child's pid is node's.
    child = spawn("taskset", ["-c", pinnedCpu, process.execPath, ...nodeArgs, script, ...modeArgs], {
      stdio,
      env,
    });
    execFileSync("taskset", ["-a", "-p", "-c", `0-${ncpu - 2}`, String(process.pid)], { stdio: "ignore" });
  } else {
    child = spawn(process.execPath, [...nodeArgs, script, ...modeArgs], { stdio, env });
  }
  if (opts.echo !== undefined) {
    const responses = Object.fromEntries(
      Object.entries(opts.echo).map(([k, v]) => [k, v.toString("base64")]),
    );
    child.send({ type: "echo", responses } satisfies EchoSetup);
  }
  const ready = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`server child exited with ${code} before serving`)));
    child.on("message", (m: { type: string; grpcPort: number; httpPort: number }) => {
      if (m.type === "ready") resolve(m);
    });
  });
  const pending: ((s: ChildStats & { at: bigint }) => void)[] = [];
  const replies = new Map<string, (m: { file?: string }) => void>();
  child.on("message", (m: { type: string; file?: string }) => {
    if (m.type === "stats") pending.shift()?.({ ...(m as ChildStats), at: process.hrtime.bigint() });
    else {
      replies.get(m.type)?.(m);
      replies.delete(m.type);
    }
  });
  const ask = (msg: object, reply: string) =>
    new Promise<{ file?: string }>((resolve) => {
      replies.set(reply, resolve);
      child.send(msg);
    });
  let stopped: Promise<void> | undefined;
  let profiling: ProfileKind = "cpu";
  return {
    pid: child.pid!,
    address: `127.0.0.1:${ready.grpcPort}`,
    httpPort: ready.httpPort,
    pinnedCpu,
    stats: () =>
      new Promise((resolve) => {
        pending.push(resolve);
        child.send({ type: "stats" });
      }),
    profileStart: async (kind: ProfileKind = "cpu") => {
      profiling = kind;
      await ask({ type: "profile-start", kind }, "profile-started");
    },
    profileStop: async (name: string) => {
      mkdirSync(PROFILE_DIR, { recursive: true });
      const file = path.join(PROFILE_DIR, `${name}.${profiling === "cpu" ? "cpu" : "heap"}profile`);
      return (await ask({ type: "profile-stop", file }, "profile-stopped")).file;
    },
    stop: () => (stopped ??= stop()),
  };

  async function stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.send({ type: "stop" });
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
    if (pinnedCpu !== undefined) {
      execFileSync("taskset", ["-a", "-p", "-c", `0-${ncpu - 1}`, String(process.pid)], { stdio: "ignore" });
    }
  }
}

export function statsDelta(a: ChildStats & { at: bigint }, b: ChildStats & { at: bigint }): ServerStatsDelta {
  const wallS = Number(b.at - a.at) / 1e9;
  const userS = (b.cpuUserUs - a.cpuUserUs) / 1e6;
  const sysS = (b.cpuSystemUs - a.cpuSystemUs) / 1e6;
  const active = b.eluActiveMs - a.eluActiveMs;
  const idle = b.eluIdleMs - a.eluIdleMs;
  return {
    wallS,
    cpuPerWallS: (userS + sysS) / wallS,
    cpuUserS: userS,
    cpuSystemS: sysS,
    eventLoopUtilization: active / (active + idle),
    heapUsedMB: b.heapUsed / 2 ** 20,
    rssMB: b.rss / 2 ** 20,
    counters: b.counters,
    gcMinorShare: (b.gcMinorMs - a.gcMinorMs) / 1000 / wallS,
    gcMajorShare: (b.gcMajorMs - a.gcMajorMs) / 1000 / wallS,
    gcMinorPerSec: (b.gcMinorCount - a.gcMinorCount) / wallS,
    gcMajorPerSec: (b.gcMajorCount - a.gcMajorCount) / wallS,
    gcMaxPauseMs: b.gcMaxPauseMs,
    loopDelayMaxMs: b.loopDelayMaxMs,
  };
}

/** Scrapes one counter's value (summed over labels) from the server's /metrics. */
export async function scrapeMetric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(" ").pop());
  }
  return sum;
}
