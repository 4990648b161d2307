import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { seededRandom } from "../../src/core/random.js";

/** bench/ */
export const BENCH_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** bench/out/: every result file goes here (gitignored). */
export const OUT_DIR = path.join(BENCH_DIR, "out");

export interface Machine {
  nproc: number;
  cpuModel: string;
  node: string;
  date: string;
  loadAvg1m: number;
  git: string;
}

function gitDescribe(): string {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: BENCH_DIR }).toString().trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { cwd: BENCH_DIR })
      .toString()
      .trim();
    return dirty ? `${head} (src/ has uncommitted changes)` : head;
  } catch {
    return "unknown";
  }
}

export function machine(): Machine {
  let model = cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m?.[1]) model = m[1].trim();
  } catch {
    // not Linux: os.cpus() it is
  }
  return {
    nproc: cpus().length,
    cpuModel: model,
    node: process.version,
    date: new Date().toISOString(),
    loadAvg1m: loadavg()[0] ?? 0,
    git: gitDescribe(),
  };
}

/** Busy share of all CPUs over `ms`, from /proc/stat (Linux); undefined elsewhere. */
export function cpuBusyShare(ms = 1000): number | undefined {
  const read = () => {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  try {
    const a = read();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    const b = read();
    return 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total);
  } catch {
    return undefined;
  }
}

/** Says so when something else is using the CPU before we start: the figures would be low. */
export function warnIfBusy(_m: Machine): string | undefined {
  const busy = cpuBusyShare();
  if (busy !== undefined && busy > 0.1) {
    const msg = `warning: the CPUs were ${(100 * busy).toFixed(0)}% busy in the second before starting; another process may be running`;
    console.log(msg);
    return msg;
  }
  return undefined;
}

export function writeResult(name: string, data: unknown): string {
  mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
  return file;
}

/** 1234567 -> "1,234,567"; fractions get `digits` decimals. */
export function num(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return String(n);
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function ratio(a: number, b: number): string {
  return b > 0 ? `${(a / b).toFixed(3)}x` : "n/a";
}

/** Prints rows as an aligned plain-text table; numbers are right-aligned. */
export function printTable(header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === "number" ? num(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[], isHeader: boolean) =>
    r
      .map((c, i) => {
        const right = !isHeader && typeof rows[0]?.[i] === "number";
        return right ? c.padStart(widths[i]!) : c.padEnd(widths[i]!);
      })
      .join("  ");
  console.log(line(header, true).trimEnd());
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of cells.slice(1)) console.log(line(r, false).trimEnd());
}

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

export function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export { type LatencySummary, latencyHistogram, summarize } from "../../src/testkit/histogram.js";

export function ms(us: number): string {
  return `${(us / 1000).toFixed(3)} ms`;
}

export function shuffled<T>(xs: readonly T[], seed = 1): T[] {
  const out = [...xs];
  const r = seededRandom(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export interface Rate {
  /** Operations per second: the median of the rounds. */
  perSec: number;
  rounds: number[];
}

/**
 * Runs `round` (which performs `opsPerRound` operations) once to warm up, then `rounds` times,
 * and reports the median rate. `round` returns something so the work cannot be optimised away.
 */
export function measure(opsPerRound: number, round: () => unknown, rounds = 5): Rate {
  let sink: unknown = round();
  const rates: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = nowNs();
    sink = round();
    rates.push(opsPerRound / secondsSince(t0));
  }
  if (sink === Symbol.for("never")) console.log(sink);
  return { perSec: median(rates), rounds: rates.map((r) => Math.round(r)) };
}

/** Parses `--name value` and `--flag` options; unknown ones are an error. */
export function parseArgs<T extends Record<string, string | number | boolean>>(defaults: T): T {
  const out: Record<string, string | number | boolean> = { ...defaults };
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    let name = a.slice(2);
    let neg = false;
    if (!(name in defaults) && name.startsWith("no-")) {
      name = name.slice(3);
      neg = true;
    }
    if (!(name in defaults))
      throw new Error(`unknown option ${a}; known: ${Object.keys(defaults).join(", ")}`);
    const d = defaults[name];
    if (typeof d === "boolean") out[name] = !neg;
    else {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      out[name] = typeof d === "number" ? Number(v) : v;
      if (typeof d === "number" && !Number.isFinite(out[name])) throw new Error(`${a}: not a number: ${v}`);
    }
  }
  return out as T;
}
