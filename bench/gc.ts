/**
 * GC pauses at 1M counters (issue 16 item 2). Each variant is a child process with its own V8
 * heap options running the server's request path in-process (the built dist/, one thread):
 * it fills `--counters` counters with batched reports (string keys, then the handles answered),
 * then for `--seconds` drives a steady load of 500-entry ReportAndGetPolicy calls and single-item
 * Check calls spread over all the counters, a slice of work every millisecond, and records every
 * GC pause (PerformanceObserver 'gc': kind, duration), the event loop's delay
 * (monitorEventLoopDelay) and the longest turn. A last child runs the same 1 ms loop with no work
 * and no counters: what this machine's scheduling alone does to the loop, the floor to compare to.
 * Before the timed load each child measures the bytes one call allocates (sampling heap profiler,
 * every object).
 *
 *   npm run bench:gc [-- --counters 1000000 --seconds 60 --reports 300000 --checks 20000
 *                       --variants "default|--max-semi-space-size=64|--single-threaded-gc"]
 *
 * `--variants`: heap options per child, `|` between variants, `default` for none. Figures go to
 * bench/out/gc.json, every pause included.
 */
import { execFileSync, spawn } from "node:child_process";
import { constants, monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import type { ReportResponse } from "../src/protocol/messages.js";
import { allocatedPer } from "./lib/alloc.js";
import { machine, num, parseArgs, printTable, writeResult } from "./lib/common.js";
import type { HeapSummary } from "./lib/cpuprofile.js";
import { distLimiter } from "./lib/dist-limiter.js";
import {
  CheckRequestType,
  handleBodies,
  ReportResponseType,
  reportBodies,
  reportKey,
  reportRequest,
} from "./lib/wire.js";

const opts = parseArgs({
  counters: 1_000_000,
  seconds: 60,
  /** Report entries per second (in 500-entry calls) and Check calls per second. */
  reports: 300_000,
  checks: 20_000,
  batch: 500,
  variants: "idle|default|--max-semi-space-size=32|--max-semi-space-size=64|--single-threaded-gc",
  child: "",
});

const KIND: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "scavenge",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "mark-compact",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental marking",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weak callbacks",
};

interface Pause {
  /** ms since the timed load started */
  at: number;
  kind: string;
  ms: number;
}

interface ChildResult {
  variant: string;
  flags: string[];
  counters: number;
  fillSeconds: number;
  bytesPerReportCall?: number;
  bytesPerCheckCall?: number;
  /** Where those bytes are allocated (innermost frames first). */
  allocSites?: { report: HeapSummary["top"]; check: HeapSummary["top"] };
  seconds: number;
  reportEntries: number;
  checkCalls: number;
  cpuSeconds: number;
  pauses: Pause[];
  byKind: { kind: string; count: number; totalMs: number; p50Ms: number; maxMs: number; p99Ms: number }[];
  maxPauseMs: number;
  loopDelay: { p50Ms: number; p99Ms: number; p999Ms: number; maxMs: number };
  longestTurnMs: number;
  heapUsedMB: number;
  rssMB: number;
  semiSpaceMB: number;
}

const pct = (xs: number[], q: number) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

async function child(variant: string): Promise<ChildResult> {
  const idle = variant === "idle";
  const batch = opts.batch;
  const t0 = performance.now();
  let reportCall: (b: Buffer) => Buffer = () => Buffer.alloc(0);
  let checkCall: (b: Buffer) => Buffer = () => Buffer.alloc(0);
  let reportBytes: Buffer[] = [];
  const checkBytes: Buffer[] = [];
  const clientId = Buffer.from("gc-gw-1");
  let seq = 0;
  let bytesPerReportCall: number | undefined;
  let bytesPerCheckCall: number | undefined;
  let allocSites: ChildResult["allocSites"];
  let counters = 0;
  if (!idle) {
    const d = await distLimiter(opts.counters + 1000);
    reportCall = d.report;
    checkCall = d.check;
    // Fill: every key by string once, as a gateway's first reports; then the handles answered.
    const learned: ReportResponse[] = [];
    const strings = reportBodies(opts.counters, batch);
    for (const b of strings)
      learned.push(ReportResponseType.decode(d.report(reportRequest(clientId, ++seq, b))) as never);
    reportBytes = handleBodies(learned, batch);
    learned.length = 0;
    // Checks over the whole key space: 100k single-item requests, every (counters/100k)th key.
    const step = Math.max(1, Math.floor(opts.counters / 100_000));
    for (let i = 0; i < opts.counters; i += step)
      checkBytes.push(
        Buffer.from(CheckRequestType.encode({ items: [{ key: reportKey(i), cost: 1 }] }).finish()),
      );
    counters = d.engine.size;
    const r = await allocatedPer("gc-report", () => {
      for (let i = 0; i < 200; i++)
        d.report(reportRequest(clientId, ++seq, reportBytes[i % reportBytes.length]!));
      return 200;
    });
    bytesPerReportCall = r.bytesPerOp;
    const c = await allocatedPer("gc-check", () => {
      for (let i = 0; i < 20_000; i++) d.check(checkBytes[(i * 7919) % checkBytes.length]!);
      return 20_000;
    });
    bytesPerCheckCall = c.bytesPerOp;
    allocSites = { report: r.heap.top.slice(0, 8), check: c.heap.top.slice(0, 8) };
  }
  const fillSeconds = (performance.now() - t0) / 1000;

  const pauses: Pause[] = [];
  let start = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? -1;
      if (e.startTime >= start)
        pauses.push({ at: e.startTime - start, kind: KIND[kind] ?? `kind ${kind}`, ms: e.duration });
    }
  });
  obs.observe({ entryTypes: ["gc"] });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  const cpu0 = process.cpuUsage();
  start = performance.now();
  loop.enable();
  let entriesDone = 0;
  let checksDone = 0;
  let longestTurn = 0;
  let r = 0;
  let c = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const t = performance.now();
      const elapsed = (t - start) / 1000;
      if (elapsed >= opts.seconds) {
        resolve();
        return;
      }
      if (!idle) {
        // What is due by now at the set rates, at most 50 ms of it at once (no catch-up storm).
        const dueEntries = Math.min(opts.reports * elapsed, entriesDone + opts.reports * 0.05);
        while (entriesDone + batch <= dueEntries) {
          reportCall(reportRequest(clientId, ++seq, reportBytes[r]!));
          r = (r + 1) % reportBytes.length;
          entriesDone += batch;
        }
        const dueChecks = Math.min(opts.checks * elapsed, checksDone + opts.checks * 0.05);
        while (checksDone + 1 <= dueChecks) {
          checkCall(checkBytes[c]!);
          c = (c + 7919) % checkBytes.length;
          checksDone++;
        }
      }
      longestTurn = Math.max(longestTurn, performance.now() - t);
      setTimeout(tick, 1);
    };
    setTimeout(tick, 1);
  });
  loop.disable();
  const cpu = process.cpuUsage(cpu0);
  obs.disconnect();
  const kinds = [...new Set(pauses.map((p) => p.kind))];
  const mem = process.memoryUsage();
  const semi = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space");
  return {
    variant,
    flags: process.execArgv.filter((a) => a.startsWith("--") && a !== "--import"),
    counters,
    fillSeconds,
    bytesPerReportCall,
    bytesPerCheckCall,
    allocSites,
    seconds: opts.seconds,
    reportEntries: entriesDone,
    checkCalls: checksDone,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    pauses,
    byKind: kinds.map((kind) => {
      const ms = pauses.filter((p) => p.kind === kind).map((p) => p.ms);
      return {
        kind,
        count: ms.length,
        totalMs: ms.reduce((a, b) => a + b, 0),
        p50Ms: pct(ms, 0.5),
        maxMs: Math.max(...ms),
        p99Ms: pct(ms, 0.99),
      };
    }),
    maxPauseMs: Math.max(0, ...pauses.map((p) => p.ms)),
    loopDelay: {
      p50Ms: loop.percentile(50) / 1e6,
      p99Ms: loop.percentile(99) / 1e6,
      p999Ms: loop.percentile(99.9) / 1e6,
      maxMs: loop.max / 1e6,
    },
    longestTurnMs: longestTurn,
    heapUsedMB: mem.heapUsed / 2 ** 20,
    rssMB: mem.rss / 2 ** 20,
    semiSpaceMB: (semi?.space_size ?? 0) / 2 ** 20,
  };
}

if (opts.child !== "") {
  const res = await child(opts.child);
  process.stdout.write(`\nRESULT ${JSON.stringify(res)}\n`);
  process.exit(0);
}

const m = machine();
console.log(
  `GC bench: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}, load average ${m.loadAvg1m.toFixed(2)}\n` +
    `${num(opts.counters)} counters; ${num(opts.reports)} report entries/s in ${opts.batch}-entry calls and ${num(opts.checks)} Check calls/s ` +
    `for ${opts.seconds} s per variant, one child process each, the built dist/\n`,
);
execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
const self = fileURLToPath(import.meta.url);
const results: ChildResult[] = [];
for (const variant of opts.variants.split("|").map((v) => v.trim())) {
  const flags = variant === "default" || variant === "idle" ? [] : variant.split(/\s+/);
  const args = [
    ...flags,
    "--import",
    "tsx",
    self,
    "--child",
    variant,
    ...["--counters", "--seconds", "--reports", "--checks", "--batch"].flatMap((o) => [
      o,
      String(opts[o.slice(2) as keyof typeof opts]),
    ]),
  ];
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    p.stdout.on("data", (b: Buffer) => {
      text += b.toString();
    });
    p.on("error", reject);
    p.on("exit", (code) =>
      code === 0 ? resolve(text) : reject(new Error(`variant ${variant} exited ${code}`)),
    );
  });
  const line = out.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`variant ${variant}: no result`);
  const res = JSON.parse(line.slice(7)) as ChildResult;
  results.push(res);
  console.log(
    `${variant}: ${res.pauses.length} pauses, longest ${res.maxPauseMs.toFixed(1)} ms; loop delay max ${res.loopDelay.maxMs.toFixed(1)} ms`,
  );
}

console.log("");
printTable(
  [
    "variant",
    "entries/s",
    "checks/s",
    "CPU s/s",
    "B/report call",
    "B/check call",
    "scavenges",
    "scav. total ms",
    "scav. p50 ms",
    "scav. p99 ms",
    "scav. max ms",
    "mark-compacts",
    "m-c max ms",
    "longest pause ms",
    "loop delay p99 ms",
    "loop delay max ms",
    "longest turn ms",
    "heap MB",
  ],
  results.map((r) => {
    const k = (name: string) => r.byKind.find((b) => b.kind === name);
    const sc = k("scavenge");
    const mc = k("mark-compact");
    return [
      r.variant,
      num(r.reportEntries / r.seconds),
      num(r.checkCalls / r.seconds),
      (r.cpuSeconds / r.seconds).toFixed(2),
      r.bytesPerReportCall === undefined ? "" : num(r.bytesPerReportCall),
      r.bytesPerCheckCall === undefined ? "" : num(r.bytesPerCheckCall),
      String(sc?.count ?? 0),
      (sc?.totalMs ?? 0).toFixed(0),
      (sc?.p50Ms ?? 0).toFixed(2),
      (sc?.p99Ms ?? 0).toFixed(2),
      (sc?.maxMs ?? 0).toFixed(2),
      String(mc?.count ?? 0),
      (mc?.maxMs ?? 0).toFixed(1),
      r.maxPauseMs.toFixed(1),
      r.loopDelay.p99Ms.toFixed(2),
      r.loopDelay.maxMs.toFixed(1),
      r.longestTurnMs.toFixed(1),
      r.heapUsedMB.toFixed(0),
    ];
  }),
);
const sites = results.find((r) => r.allocSites !== undefined)?.allocSites;
if (sites) {
  for (const [what, top] of Object.entries(sites)) {
    console.log(`\nwhere a ${what} call allocates (${results.find((r) => r.allocSites)!.variant}):`);
    printTable(
      ["MB", "%", "allocated at (innermost first)"],
      top.map((t) => [t.mb.toFixed(1), `${t.pct.toFixed(1)}%`, t.stack]),
    );
  }
}
writeResult("gc", { machine: m, options: opts, results });
