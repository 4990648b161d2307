import { readFileSync } from "node:fs";
import path from "node:path";
import { printTable } from "./common.js";

/** The parts of V8's .cpuprofile format (what `node --cpu-prof` writes) that we read. */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  fn: string;
  where: string;
  selfMs: number;
  /** Share of the non-idle samples. */
  pct: number;
}

export interface ProfileSummary {
  file: string;
  busyMs: number;
  idleMs: number;
  top: SelfTime[];
  /** Self time by where the code lives: our src/, grpc-js, protobufjs, node internals, GC... */
  byArea: { area: string; selfMs: number; pct: number }[];
}

function area(url: string, fn: string): string {
  if (url === "") return fn.startsWith("(") ? fn : "(no url: generated code, i.e. protobufjs codecs)";
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith("node:")) return "node internals";
  const src = /\/src\/([^/]+)\//.exec(url);
  if (src) return `shardlimit src/${src[1]}`;
  return "other";
}

function shortUrl(url: string): string {
  if (url === "") return "";
  const i = url.lastIndexOf("node_modules/");
  if (i >= 0) return url.slice(i + "node_modules/".length);
  const s = url.lastIndexOf("/src/");
  if (s >= 0) return url.slice(s + 1);
  return url.startsWith("node:") ? url : path.basename(url);
}

export function summarizeProfile(file: string, topN = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const fnTotals = new Map<string, SelfTime>();
  const areaTotals = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === "(idle)") {
      idle += us;
      continue;
    }
    busy += us;
    const fn = functionName || "(anonymous)";
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : "";
    const k = `${fn}\u0000${where}`;
    const t = fnTotals.get(k) ?? { fn, where, selfMs: 0, pct: 0 };
    t.selfMs += us / 1000;
    fnTotals.set(k, t);
    const a = area(url, functionName);
    areaTotals.set(a, (areaTotals.get(a) ?? 0) + us / 1000);
  }
  const busyMs = busy / 1000;
  const top = [...fnTotals.values()]
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, topN)
    .map((t) => ({ ...t, selfMs: Math.round(t.selfMs), pct: Math.round((1000 * t.selfMs) / busyMs) / 10 }));
  const byArea = [...areaTotals]
    .sort((a, b) => b[1] - a[1])
    .map(([a, v]) => ({ area: a, selfMs: Math.round(v), pct: Math.round((1000 * v) / busyMs) / 10 }));
  return { file, busyMs: Math.round(busyMs), idleMs: Math.round(idle / 1000), top, byArea };
}

export function printProfile(s: ProfileSummary): void {
  console.log(`\nserver CPU profile ${s.file}`);
  console.log(`busy ${s.busyMs} ms, idle ${s.idleMs} ms; self time by area (share of busy):`);
  printTable(
    ["area", "self ms", "%"],
    s.byArea.map((a) => [a.area, a.selfMs, `${a.pct.toFixed(1)}%`]),
  );
  console.log("\ntop functions by self time:");
  printTable(
    ["function", "where", "self ms", "%"],
    s.top.map((t) => [t.fn, t.where, t.selfMs, `${t.pct.toFixed(1)}%`]),
  );
}

/** V8's sampling heap profile (HeapProfiler.stopSampling), as the server child writes it. */
interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

export interface HeapSummary {
  file: string;
  /** Sampled bytes of objects still on the heap or freed by a major GC (i.e. not dying young). */
  sampledMB: number;
  mbPerSecond: number;
  /** By the innermost frames of the allocating stack. */
  top: { stack: string; mb: number; pct: number }[];
}

export function summarizeHeapProfile(file: string, seconds: number, topN = 15): HeapSummary {
  const head = (JSON.parse(readFileSync(file, "utf8")) as { head: HeapNode }).head;
  const by = new Map<string, number>();
  let total = 0;
  const walk = (n: HeapNode, stack: string[]) => {
    const f = n.callFrame;
    const frame = `${f.functionName || "(anonymous)"}${f.url ? ` ${shortUrl(f.url)}:${f.lineNumber + 1}` : ""}`;
    const s = [...stack, frame];
    if (n.selfSize > 0) {
      const k = s.slice(-3).reverse().join(" < ");
      by.set(k, (by.get(k) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    for (const c of n.children) walk(c, s);
  };
  walk(head, []);
  const top = [...by]
    .sort((a, b) => b[1] - a[1])
    .slice(0, topN)
    .map(([stack, bytes]) => ({ stack, mb: bytes / 2 ** 20, pct: (100 * bytes) / total }));
  return { file, sampledMB: total / 2 ** 20, mbPerSecond: total / 2 ** 20 / seconds, top };
}

export function printHeapProfile(s: HeapSummary): void {
  console.log(
    `\nserver heap profile ${s.file}: ${s.sampledMB.toFixed(0)} MB (${s.mbPerSecond.toFixed(1)} MB/s) of objects ` +
      "that outlived the young generation (still live, or freed only by a major GC), by allocating stack:",
  );
  printTable(
    ["MB", "%", "allocated at (innermost first)"],
    s.top.map((t) => [t.mb.toFixed(1), `${t.pct.toFixed(1)}%`, t.stack]),
  );
}

// `npx tsx bench/lib/cpuprofile.ts <file.cpuprofile> [topN]`: summarise any profile.
if (
  process.argv[1] &&
  path.resolve(process.argv[1]).replace(/\.ts$/, "") === import.meta.filename.replace(/\.ts$/, "")
) {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: npx tsx bench/lib/cpuprofile.ts <file.cpuprofile> [topN]");
    process.exit(2);
  }
  printProfile(summarizeProfile(file, Number(process.argv[3] ?? 25)));
}
