import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

let ticks: number | undefined;

/** Clock ticks per second of /proc's CPU times (CLK_TCK, almost always 100). */
export function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** CPU seconds (user + system, all threads) a process has used so far; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces: fields count from after its closing parenthesis.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return (utime + stime) / clockTicks();
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds used by a set of processes between `start()` and `stop()`. A process that exits
 * in between counts up to its last reading (take readings with `sample()` now and then).
 */
export class CpuMeter {
  private readonly first = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private t0 = 0;
  private t1 = 0;

  constructor(private readonly pids: () => readonly number[]) {}

  start(): void {
    this.t0 = performance.now();
    for (const pid of this.pids()) {
      const c = processCpuSeconds(pid);
      if (c !== undefined) {
        this.first.set(pid, c);
        this.last.set(pid, c);
      }
    }
  }

  sample(): void {
    for (const pid of this.pids()) {
      const c = processCpuSeconds(pid);
      if (c === undefined) continue;
      if (!this.first.has(pid)) this.first.set(pid, 0); // started during the run
      this.last.set(pid, c);
    }
  }

  stop(): { cpuSeconds: number; wallSeconds: number; byPid: Record<number, number> } {
    this.sample();
    this.t1 = performance.now();
    const byPid: Record<number, number> = {};
    let total = 0;
    for (const [pid, c] of this.last) {
      const used = c - (this.first.get(pid) ?? 0);
      byPid[pid] = used;
      total += used;
    }
    return { cpuSeconds: total, wallSeconds: (this.t1 - this.t0) / 1000, byPid };
  }
}

/**
 * CPU seconds of a set of processes in each interval between `sample()` calls, for timelines. A
 * process that appears between samples (a restart) counts from its start; one that dies loses
 * only what it used after its last sample.
 */
export class CpuTimeline {
  private readonly prev = new Map<number, number>();
  readonly perSample: number[] = [];

  constructor(private readonly pids: () => readonly number[]) {}

  start(): void {
    for (const pid of this.pids()) {
      const c = processCpuSeconds(pid);
      if (c !== undefined) this.prev.set(pid, c);
    }
  }

  sample(): void {
    let used = 0;
    for (const pid of this.pids()) {
      const c = processCpuSeconds(pid);
      if (c === undefined) continue;
      used += c - (this.prev.get(pid) ?? 0);
      this.prev.set(pid, c);
    }
    this.perSample.push(used);
  }
}

/** `pid` and every process below it (a `serve --workers` supervisor and its workers). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch {
    return [pid];
  }
  for (const e of entries) {
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** CPU seconds used so far by `pid` and every process below it (those alive now). */
export function treeCpuSeconds(pid: number): number {
  let total = 0;
  for (const p of processTree(pid)) total += processCpuSeconds(p) ?? 0;
  return total;
}
