/**
 * The synchronous APIs through the gRPC server (a child process):
 *  (a) Check: most decisions/s, single-item calls and 10-item batches, many calls in flight;
 *  (b) Envoy ShouldRateLimit (fixed window, one descriptor): the most calls/s found by ramping
 *      closed-loop concurrency, then an open-loop run at half that rate, latency measured from
 *      each call's scheduled send time (no coordinated omission).
 * Baseline, same run: the echo server (bare grpc-js, no decoding, fixed response of the real size)
 * under the same generator, for throughput and for open-loop latency at the same rate.
 *
 *   npx tsx bench/grpc-sync.ts          (npm run bench:grpc-sync)
 *
 * Options: --keys 100000 --checkConcurrency 32,128 --batchConcurrency 32 --seconds 3
 *          --ramp 1,2,4,8,16,32,64 --rampSeconds 1.5 --openFractions 0.5,0.25,0.125
 *          --openSeconds 8 (the 0.5 run) --openLowerSeconds 4 --client h2|grpc-js --pin --no-echo
 *          --profile (a profiled Check run: the server's top functions)
 */
import { machine, ms, num, parseArgs, printTable, warnIfBusy, writeResult } from "./lib/common.js";
import { type ProfileSummary, printProfile, summarizeProfile } from "./lib/cpuprofile.js";
import {
  type Caller,
  closedLoop,
  METHOD,
  makeClient,
  measuredRun,
  type OpenLoopResult,
  openLoop,
  type Run,
} from "./lib/raw-client.js";
import { type BenchServer, type ServerStatsDelta, spawnServer, statsDelta } from "./lib/spawn-server.js";
import {
  BENCH_CONFIG,
  CheckResponseType,
  checkRequests,
  EnvoyResponseType,
  envoyRequests,
} from "./lib/wire.js";

const TARGET_CHECK_PER_S = 100_000;
const TARGET_P99_US = 1000;

const opts = parseArgs({
  keys: 100_000,
  checkConcurrency: "32,128",
  batchConcurrency: 32,
  seconds: 3,
  ramp: "1,2,4,8,16,32,64",
  rampSeconds: 1.5,
  openFractions: "0.5,0.25,0.125",
  openSeconds: 8,
  openLowerSeconds: 4,
  client: "h2",
  pin: false,
  echo: true,
  profile: false,
});
const list = (s: string) =>
  s
    .split(",")
    .filter((x) => x.trim() !== "")
    .map(Number);
const m = machine();
const busy = warnIfBusy(m);

const single = checkRequests(opts.keys, 1);
const batch10 = checkRequests(opts.keys, 10);
const envoy = envoyRequests(10_000);
const cycle = (bufs: Buffer[]) => (i: number) => bufs[i % bufs.length]!;

console.log(
  `gRPC synchronous API benchmark: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}\n` +
    `client (load generator, this process) and server (child process) share this ${m.nproc}-CPU machine; loopback only.\n`,
);

type Labelled = Run & { what: string; server_: string };
const runs: Labelled[] = [];
const ramp: Labelled[] = [];
type Open = OpenLoopResult & { fractionOfMax: number; server: ServerStatsDelta; server_: string };
const opens: Open[] = [];
let open: Open | undefined;
let echoOpen: Open | undefined;
/** An open-loop run with the server's CPU, GC pauses and event-loop stalls around it. */
async function measuredOpen(
  server: BenchServer,
  client: Caller,
  rate: number,
  seconds: number,
  fraction: number,
  label: string,
) {
  const s0 = await server.stats();
  const o = await openLoop(client, METHOD.shouldRateLimit, rate, seconds, cycle(envoy));
  const s1 = await server.stats();
  return { ...o, fractionOfMax: fraction, server: statsDelta(s0, s1), server_: label };
}
let profile: ProfileSummary | undefined;
let samples: { check: Buffer; envoy: Buffer } | undefined;
let pinnedCpu: string | undefined;

async function sanity(client: Caller) {
  const c1 = CheckResponseType.decode(await client.callAsync(METHOD.check, single[0]!)) as unknown as {
    results: { allowed?: boolean; error?: unknown }[];
  };
  const c10 = CheckResponseType.decode(await client.callAsync(METHOD.check, batch10[0]!)) as unknown as {
    results: { allowed?: boolean; error?: unknown }[];
  };
  const okC = (r: { results: { allowed?: boolean; error?: unknown }[] }, n: number) =>
    r.results.length === n && r.results.every((x) => x.allowed && !x.error);
  const envoyBytes = await client.callAsync(METHOD.shouldRateLimit, envoy[0]!);
  const e = EnvoyResponseType.decode(envoyBytes) as unknown as {
    overallCode: number;
    statuses: { code: number; currentLimit?: unknown }[];
  };
  if (!okC(c1, 1) || !okC(c10, 10) || e.overallCode !== 1 || e.statuses[0]?.currentLimit === undefined) {
    throw new Error(`sanity check failed: ${JSON.stringify({ c1, c10, e })}`);
  }
  console.log(
    "sanity: Check answers allowed for 1 and 10 items; ShouldRateLimit answers OK with its limit\n",
  );
  return { check: await client.callAsync(METHOD.check, single[1]!), envoy: envoyBytes };
}

async function checkRuns(server: BenchServer, client: Caller, label: string, concurrencies: number[]) {
  await closedLoop(client, METHOD.check, concurrencies[0]!, 2, cycle(single));
  for (const c of concurrencies) {
    const r = await measuredRun(server, client, METHOD.check, c, opts.seconds, cycle(single), 1);
    runs.push({ ...r, what: "Check, 1 item", server_: label });
  }
}

// 1. The shardlimit server.
{
  const server = await spawnServer({ config: BENCH_CONFIG, pin: opts.pin });
  pinnedCpu = server.pinnedCpu;
  const client = await makeClient(opts.client, server.address);
  console.log(
    `shardlimit server pid ${server.pid}${server.pinnedCpu !== undefined ? `, pinned to CPU ${server.pinnedCpu}` : ""}`,
  );
  try {
    await client.ready();
    samples = await sanity(client);
    await checkRuns(server, client, "shardlimit", list(opts.checkConcurrency));
    const b = await measuredRun(
      server,
      client,
      METHOD.check,
      opts.batchConcurrency,
      opts.seconds,
      cycle(batch10),
      10,
    );
    runs.push({ ...b, what: "Check, 10 items", server_: "shardlimit" });
    if (opts.profile) {
      const best = runs
        .filter((r) => r.what === "Check, 1 item")
        .sort((a, b) => b.unitsPerSec - a.unitsPerSec)[0]!;
      await server.profileStart();
      const pr = await measuredRun(
        server,
        client,
        METHOD.check,
        best.concurrency,
        opts.seconds,
        cycle(single),
        1,
      );
      const file = await server.profileStop("grpc-sync-check-server");
      runs.push({ ...pr, what: "Check, 1 item, profiled", server_: "shardlimit" });
      if (file) profile = summarizeProfile(file);
    }
  } finally {
    client.close();
    await server.stop();
  }
}

// 2. ShouldRateLimit on a fresh server (so the sweeper is not busy with the Check runs' counters).
{
  const server = await spawnServer({ config: BENCH_CONFIG, pin: opts.pin });
  const client = await makeClient(opts.client, server.address);
  console.log(`shardlimit server pid ${server.pid} (fresh, for ShouldRateLimit)`);
  try {
    await client.ready();
    // Ramp the closed-loop concurrency to find the most calls/s...
    await closedLoop(client, METHOD.shouldRateLimit, 8, 1, cycle(envoy));
    for (const c of list(opts.ramp)) {
      const r = await measuredRun(
        server,
        client,
        METHOD.shouldRateLimit,
        c,
        opts.rampSeconds,
        cycle(envoy),
        1,
      );
      ramp.push({ ...r, what: "ShouldRateLimit", server_: "shardlimit" });
    }
    const max = Math.max(...ramp.map((r) => r.callsPerSec));
    // ...then open loops: at half of it (the target's condition), then lower, to find where P99 holds.
    for (const f of list(opts.openFractions)) {
      const o = await measuredOpen(
        server,
        client,
        Math.round(max * f),
        f === 0.5 ? opts.openSeconds : opts.openLowerSeconds,
        f,
        "shardlimit",
      );
      opens.push(o);
      if (f === 0.5) open = o;
    }
  } finally {
    client.close();
    await server.stop();
  }
}

// 3. The baseline: the echo server, same generator, same response sizes.
if (opts.echo && samples && open) {
  const server = await spawnServer({
    echo: { [METHOD.check]: samples.check, [METHOD.shouldRateLimit]: samples.envoy },
    pin: opts.pin,
  });
  const client = await makeClient(opts.client, server.address);
  try {
    await client.ready();
    const best = runs
      .filter((r) => r.what === "Check, 1 item")
      .sort((a, b) => b.unitsPerSec - a.unitsPerSec)[0]!;
    await checkRuns(server, client, "echo (baseline)", [best.concurrency]);
    const bestRamp = [...ramp].sort((a, b) => b.callsPerSec - a.callsPerSec)[0]!;
    const r = await measuredRun(
      server,
      client,
      METHOD.shouldRateLimit,
      bestRamp.concurrency,
      opts.seconds,
      cycle(envoy),
      1,
    );
    runs.push({ ...r, what: "ShouldRateLimit", server_: "echo (baseline)" });
    echoOpen = await measuredOpen(
      server,
      client,
      open.targetPerSec,
      Math.min(5, opts.openSeconds),
      0.5,
      "echo (baseline)",
    );
  } finally {
    client.close();
    await server.stop();
  }
}

const echoOf = (what: string) => runs.find((r) => r.server_ === "echo (baseline)" && r.what === what);
const row = (r: Labelled) => {
  const e = echoOf(r.what);
  return [
    r.what,
    r.server_,
    String(r.concurrency),
    Math.round(r.unitsPerSec),
    Math.round(r.callsPerSec),
    e ? `${(r.unitsPerSec / e.unitsPerSec).toFixed(3)}x` : "",
    r.server.cpuPerWallS.toFixed(2),
    `${(100 * r.server.eventLoopUtilization).toFixed(1)}%`,
    Math.round(r.serverCpuUsPerCall),
    Math.round(r.unitsPerServerCpuSecond),
    r.clientCpuPerWallS.toFixed(2),
    ms(r.latency.p50Us),
    ms(r.latency.p99Us),
    r.errors,
  ];
};
const header = [
  "call",
  "server",
  "in flight",
  "decisions/s",
  "calls/s",
  "vs echo",
  "srv CPU/s",
  "srv loop busy",
  "srv CPU µs/call",
  "decisions/srv CPU-s",
  "client CPU/s",
  "p50",
  "p99",
  "errors",
];
console.log("Check (closed loop):");
printTable(header, runs.filter((r) => r.what.startsWith("Check")).map(row));
const bestCheck = Math.max(
  ...runs
    .filter((r) => r.server_ === "shardlimit" && r.what.startsWith("Check") && !r.what.includes("profiled"))
    .map((r) => r.unitsPerSec),
);
const bestSingle = Math.max(
  ...runs.filter((r) => r.server_ === "shardlimit" && r.what === "Check, 1 item").map((r) => r.unitsPerSec),
);
const checkMet = bestCheck >= TARGET_CHECK_PER_S;
console.log(
  `\ntarget >= ${num(TARGET_CHECK_PER_S)} Check decisions/s: ${checkMet ? "MET" : "NOT MET"} ` +
    `(best ${num(bestCheck)}/s = ${(bestCheck / TARGET_CHECK_PER_S).toFixed(3)}x; single-item calls ${num(bestSingle)}/s = ${(bestSingle / TARGET_CHECK_PER_S).toFixed(3)}x)`,
);

console.log("\nShouldRateLimit, closed-loop ramp:");
printTable(header, [...ramp, ...runs.filter((r) => r.what === "ShouldRateLimit")].map(row));
const maxRate = Math.max(...ramp.map((r) => r.callsPerSec));
const lat = (o: Open) => [
  o.server_,
  `${o.fractionOfMax}`,
  Math.round(o.targetPerSec),
  Math.round(o.achievedPerSec),
  ms(o.latency.p50Us),
  ms(o.latency.p90Us),
  ms(o.latency.p99Us),
  ms(o.latency.p999Us),
  ms(o.latency.maxUs),
  ms(o.sendLag.p99Us),
  o.maxInFlight,
  o.server.cpuPerWallS.toFixed(2),
  `${o.server.gcMaxPauseMs.toFixed(1)} ms`,
  `${o.server.loopDelayMaxMs.toFixed(1)} ms`,
  o.clientCpuPerWallS.toFixed(2),
  o.errors,
];
console.log(
  `\nShouldRateLimit, open loop at fractions of the max closed-loop rate (${num(maxRate)} calls/s):`,
);
printTable(
  [
    "server",
    "x max",
    "target/s",
    "achieved/s",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "max",
    "p99 send lag",
    "max in flight",
    "srv CPU/s",
    "srv max GC pause",
    "srv max loop stall",
    "client CPU/s",
    "errors",
  ],
  [...opens, ...(echoOpen ? [echoOpen] : [])].map(lat),
);
const holding = opens
  .filter((o) => o.latency.p99Us <= TARGET_P99_US)
  .sort((a, b) => b.targetPerSec - a.targetPerSec)[0];
console.log(
  holding
    ? `highest tested rate with P99 <= 1 ms: ${num(holding.targetPerSec)} calls/s (${holding.fractionOfMax} x max)`
    : "no tested rate kept P99 <= 1 ms",
);
const p99 = open?.latency.p99Us ?? Number.POSITIVE_INFINITY;
const latMet = p99 <= TARGET_P99_US;
console.log(
  `\ntarget P99 <= 1 ms at half the max rate: ${latMet ? "MET" : "NOT MET"} (P99 ${ms(p99)} at ${num(open?.targetPerSec ?? 0)} calls/s` +
    `${echoOpen ? `; the echo server's P99 at the same rate: ${ms(echoOpen.latency.p99Us)}` : ""})`,
);
console.log(
  "note: the generator shares the 2-CPU machine with the server and spins one core in the open loop.",
);
if (profile) printProfile(profile);

writeResult(opts.profile ? "grpc-sync-profile" : "grpc-sync", {
  machine: m,
  busy,
  options: opts,
  note: "client (load generator) and server share one machine; the server is one Node process",
  serverPinnedCpu: pinnedCpu,
  check: {
    targetPerSec: TARGET_CHECK_PER_S,
    bestDecisionsPerSec: bestCheck,
    bestSingleItemDecisionsPerSec: bestSingle,
    targetMet: checkMet,
    runs: runs.filter((r) => r.what.startsWith("Check")),
  },
  shouldRateLimit: {
    ramp,
    maxCallsPerSec: maxRate,
    echoClosedLoop: echoOf("ShouldRateLimit"),
    openLoop: open,
    openLoops: opens,
    echoOpenLoop: echoOpen,
    highestRateWithP99UnderTarget: holding?.targetPerSec,
    targetP99Us: TARGET_P99_US,
    targetMet: latMet,
  },
  latencyUnits: "microseconds",
  profile,
});
