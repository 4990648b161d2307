/**
 * Batched-mode ingest through the gRPC server: 500-entry ReportAndGetPolicy calls over 100k keys,
 * several in flight, against a server in its own process. Baseline, same run: the echo server
 * (bare grpc-js, no decoding, fixed response of the real size) under the same load generator.
 *
 *   npx tsx bench/grpc-ingest.ts            (npm run bench:grpc-ingest)
 *   npx tsx bench/grpc-ingest.ts --profile  (then a profiled run: the server's top functions)
 *
 * Clients: `h2` (bench/lib/h2-client.ts: a few µs per call, so the generator is never the limit;
 * the main figures) and `grpc-js` (identity serializers; what a Node gateway would use).
 *
 * Options: --clients h2,grpc-js --keys 100000 --batch 500 --concurrency 8 --sweep 4,16 --warmup 3
 *          --seconds 10 --sweepSeconds 4 --otherSeconds 6 --connections 1 (grpc-js only)
 *          --pin (server on its own CPU) --no-echo --profile
 *          --profileSeconds 6 --heapProfile (then a run under the sampling heap profiler: which
 *          allocation sites fill the old generation)
 */
import { machine, ms, num, parseArgs, printTable, warnIfBusy, writeResult } from "./lib/common.js";
import {
  type HeapSummary,
  type ProfileSummary,
  printHeapProfile,
  printProfile,
  summarizeHeapProfile,
  summarizeProfile,
} from "./lib/cpuprofile.js";
import { type Caller, closedLoop, METHOD, makeClient, measuredRun, type Run } from "./lib/raw-client.js";
import { type BenchServer, scrapeMetric, spawnServer } from "./lib/spawn-server.js";
import { BENCH_CONFIG, handleBodies, ReportResponseType, reportBodies, reportRequest } from "./lib/wire.js";

const TARGET_ENTRIES_PER_S = 1_000_000;

const opts = parseArgs({
  keys: 100_000,
  batch: 500,
  clients: "h2,grpc-js",
  concurrency: 8,
  sweep: "4,16",
  warmup: 3,
  seconds: 10,
  sweepSeconds: 4,
  connections: 1,
  otherSeconds: 6,
  pin: false,
  echo: true,
  profile: false,
  profileSeconds: 6,
  heapProfile: false,
});
const list = (v: string) =>
  v
    .split(",")
    .filter((x) => x.trim() !== "")
    .map(Number);
const m = machine();
const busy = warnIfBusy(m);

const stringBodies = reportBodies(opts.keys, opts.batch);
/** What the calls send now: string keys at first, then the handles the server issued for them. */
let bodies = stringBodies;
const clientId = Buffer.from("bench-gw-1");
let seq = 0;
let chunk = 0;
/** Every call: a new seq (else it is a duplicate and not applied), the next chunk of keys. */
const nextRequest = () => {
  const body = bodies[chunk]!;
  chunk = (chunk + 1) % bodies.length;
  return reportRequest(clientId, ++seq, body);
};

console.log(
  `gRPC ingest benchmark: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}\n` +
    `client (load generator, this process) and server (child process) share this ${m.nproc}-CPU machine; loopback only.\n` +
    `${num(opts.keys)} keys in ${bodies.length} batches of ${opts.batch} entries (${num(bodies[0]!.length)} bytes each), ` +
    `${opts.connections} connection(s)\n`,
);

type Labelled = Run & { server_: string; client: string; main: boolean };
const runs: Labelled[] = [];
let responseSample: Buffer | undefined;
let duplicates = 0;
let itemErrors = 0;
let profile: ProfileSummary | undefined;
let heapProfile: HeapSummary | undefined;
let pinnedCpu: string | undefined;
const clients = String(opts.clients)
  .split(",")
  .filter((c) => c.trim() !== "");
const mainClient = clients[0]!;
const measure = (server: BenchServer, client: Caller, concurrency: number, seconds: number) =>
  measuredRun(server, client, METHOD.report, concurrency, seconds, nextRequest, opts.batch);

// 1. The shardlimit server, loaded by each client in turn (the first gives the main figures).
{
  const server = await spawnServer({ config: BENCH_CONFIG, pin: opts.pin });
  pinnedCpu = server.pinnedCpu;
  console.log(
    `shardlimit server pid ${server.pid}${server.pinnedCpu !== undefined ? `, pinned to CPU ${server.pinnedCpu}` : ""}`,
  );
  try {
    for (const kind of clients) {
      const client = await makeClient(kind, server.address, kind === "grpc-js" ? opts.connections : 1);
      try {
        await client.ready();
        if (kind === mainClient) {
          // Once, fully decoded: the server answers every entry with a policy and no error.
          responseSample = await client.callAsync(METHOD.report, nextRequest());
          const first = ReportResponseType.decode(responseSample) as unknown as {
            policies: { error?: unknown; kind: number }[];
            duplicate: boolean;
          };
          const bad = first.policies.filter((p) => p.error || !p.kind).length;
          if (first.policies.length !== opts.batch || bad > 0 || first.duplicate) {
            throw new Error(
              `sanity check failed: ${first.policies.length} policies, ${bad} with errors, duplicate ${first.duplicate}`,
            );
          }
          console.log(
            `sanity: a decoded response has ${first.policies.length} policies, none with an error\n`,
          );
          // As the gateway client does: send each key's string once, then the handle it got back.
          const learned: Buffer[] = [];
          for (const body of stringBodies)
            learned.push(await client.callAsync(METHOD.report, reportRequest(clientId, ++seq, body)));
          const withHandles = handleBodies(
            learned.map((b) => ReportResponseType.decode(b) as never),
            opts.batch,
          );
          bodies = withHandles;
          console.log(
            `key handles learned for ${num(opts.keys)} keys; calls now send handles, not strings\n`,
          );
          await closedLoop(client, METHOD.report, opts.concurrency, opts.warmup, nextRequest);
          for (const c of list(opts.sweep)) {
            runs.push({
              ...(await measure(server, client, c, opts.sweepSeconds)),
              server_: "shardlimit",
              client: kind,
              main: false,
            });
          }
          runs.push({
            ...(await measure(server, client, opts.concurrency, opts.seconds)),
            server_: "shardlimit",
            client: kind,
            main: true,
          });
          // The same load with string keys (a gateway that does not use handles), for comparison.
          bodies = stringBodies;
          await closedLoop(client, METHOD.report, opts.concurrency, 1, nextRequest);
          runs.push({
            ...(await measure(server, client, opts.concurrency, opts.otherSeconds)),
            server_: "shardlimit, string keys",
            client: kind,
            main: false,
          });
          bodies = withHandles;
          if (opts.profile) {
            // A separate run under the sampling profiler (it slows the server): where the time goes.
            await server.profileStart("cpu");
            const pr = await measure(server, client, opts.concurrency, opts.profileSeconds);
            const file = await server.profileStop("grpc-ingest-server");
            runs.push({ ...pr, server_: "shardlimit, CPU-profiled", client: kind, main: false });
            if (file) profile = summarizeProfile(file);
          }
          if (opts.heapProfile) {
            await server.profileStart("heap");
            await closedLoop(client, METHOD.report, opts.concurrency, opts.profileSeconds, nextRequest);
            const file = await server.profileStop("grpc-ingest-server");
            if (file) heapProfile = summarizeHeapProfile(file, opts.profileSeconds);
          }
        } else {
          await closedLoop(client, METHOD.report, opts.concurrency, 2, nextRequest);
          runs.push({
            ...(await measure(server, client, opts.concurrency, opts.otherSeconds)),
            server_: "shardlimit",
            client: kind,
            main: false,
          });
        }
      } finally {
        client.close();
      }
    }
    duplicates = await scrapeMetric(server.httpPort, "shardlimit_duplicate_reports_total");
    itemErrors = await scrapeMetric(server.httpPort, "shardlimit_item_errors_total");
  } finally {
    await server.stop();
  }
}

// 2. The baseline: the echo server answering the same bytes, same generator and concurrency.
if (opts.echo && responseSample) {
  const server = await spawnServer({ echo: { [METHOD.report]: responseSample }, pin: opts.pin });
  const client = await makeClient(mainClient, server.address, 1);
  try {
    await client.ready();
    await closedLoop(client, METHOD.report, opts.concurrency, 2, nextRequest);
    runs.push({
      ...(await measure(server, client, opts.concurrency, opts.otherSeconds)),
      server_: "echo (baseline)",
      client: mainClient,
      main: false,
    });
  } finally {
    client.close();
    await server.stop();
  }
}

const main = runs.find((r) => r.main)!;
const echo = runs.find((r) => r.server_ === "echo (baseline)");
const others = runs.filter((r) => r.client !== mainClient);
printTable(
  [
    "server",
    "client",
    "in flight",
    "s",
    "entries/s",
    "calls/s",
    "vs echo",
    "vs target",
    "srv CPU/s",
    "srv loop busy",
    "srv GC",
    "srv CPU µs/call",
    "entries/srv CPU-s",
    "client CPU/s",
    "p50",
    "p99",
    "errors",
  ],
  runs.map((r) => [
    r.server_ + (r.main ? " (main)" : ""),
    r.client,
    String(r.concurrency),
    r.seconds.toFixed(1),
    Math.round(r.unitsPerSec),
    Math.round(r.callsPerSec),
    echo ? `${(r.unitsPerSec / echo.unitsPerSec).toFixed(3)}x` : "",
    `${(r.unitsPerSec / TARGET_ENTRIES_PER_S).toFixed(3)}x`,
    r.server.cpuPerWallS.toFixed(2),
    `${(100 * r.server.eventLoopUtilization).toFixed(1)}%`,
    `${(100 * (r.server.gcMinorShare + r.server.gcMajorShare)).toFixed(1)}%`,
    Math.round(r.serverCpuUsPerCall),
    Math.round(r.unitsPerServerCpuSecond),
    r.clientCpuPerWallS.toFixed(2),
    ms(r.latency.p50Us),
    ms(r.latency.p99Us),
    r.errors,
  ]),
);
const met = main.unitsPerSec >= TARGET_ENTRIES_PER_S;
console.log(
  `\ntarget >= ${num(TARGET_ENTRIES_PER_S)} report entries/s on one server thread: ${met ? "MET" : "NOT MET"} ` +
    `(${num(main.unitsPerSec)} entries/s = ${(main.unitsPerSec / TARGET_ENTRIES_PER_S).toFixed(3)}x of target; ` +
    `server event loop ${(100 * main.server.eventLoopUtilization).toFixed(0)}% busy, ${main.server.cpuPerWallS.toFixed(2)} CPU-s/s, ` +
    `${num(main.unitsPerServerCpuSecond)} entries per server CPU-second)`,
);
if (echo) {
  console.log(
    `baseline: the echo server (no decoding, no work) reaches ${num(echo.unitsPerSec)} entries/s with the same generator; ` +
      `shardlimit = ${(main.unitsPerSec / echo.unitsPerSec).toFixed(3)}x of it; ` +
      `server CPU per call ${num(main.serverCpuUsPerCall)} µs vs echo ${num(echo.serverCpuUsPerCall)} µs`,
  );
}
for (const o of others) {
  console.log(
    `with the ${o.client} client (same server, same requests): ${num(o.unitsPerSec)} entries/s = ${(o.unitsPerSec / main.unitsPerSec).toFixed(3)}x of the main run; ` +
      `server CPU per call ${num(o.serverCpuUsPerCall)} µs vs ${num(main.serverCpuUsPerCall)} µs, server GC ${(100 * (o.server.gcMinorShare + o.server.gcMajorShare)).toFixed(1)}% of wall time ` +
      `vs ${(100 * (main.server.gcMinorShare + main.server.gcMajorShare)).toFixed(1)}%; client CPU ${o.clientCpuPerWallS.toFixed(2)}/s`,
  );
}
console.log(
  `server GC in the main run: scavenges ${num(main.server.gcMinorPerSec, 1)}/s taking ${(100 * main.server.gcMinorShare).toFixed(1)}% of wall time, ` +
    `major GCs ${num(main.server.gcMajorPerSec, 1)}/s taking ${(100 * main.server.gcMajorShare).toFixed(1)}%`,
);
console.log(
  `server after the run: ${num(main.server.counters)} counters, heap ${main.server.heapUsedMB.toFixed(0)} MB, ` +
    `rss ${main.server.rssMB.toFixed(0)} MB; duplicate reports counted by the server: ${duplicates}; item errors: ${itemErrors}`,
);
if (profile) printProfile(profile);
else if (opts.profile) console.log("no profile file found");
if (heapProfile) printHeapProfile(heapProfile);

writeResult(opts.profile || opts.heapProfile ? "grpc-ingest-profile" : "grpc-ingest", {
  machine: m,
  busy,
  options: opts,
  note: "client (load generator) and server share one machine; the server is one Node process",
  serverPinnedCpu: pinnedCpu,
  targetEntriesPerSec: TARGET_ENTRIES_PER_S,
  targetMet: met,
  main,
  echoBaseline: echo,
  ratioVsEcho: echo ? main.unitsPerSec / echo.unitsPerSec : undefined,
  runs,
  serverDuplicateReports: duplicates,
  serverItemErrors: itemErrors,
  responseBytes: responseSample?.length,
  profile,
  heapProfile,
});
