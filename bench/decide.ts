/**
 * The gateway's hot path: what one `decide()` costs on one thread, against a raw `Map` get-and-
 * increment and a bare `Date.now()` measured in the same run. The limiter is the real
 * GatewayLimiter, reporting every 100 ms to a real server Limiter in the same process (answers
 * arrive on the next turn of the event loop), so policies are live while it is measured.
 *
 *   tsx bench/decide.ts      (npm run bench:decide)
 *
 * Options: --keys 100000  --rounds 7  --ops 2000000
 */

import { GatewayLimiter } from "../src/client/gateway-limiter.js";
import type { ClientTransport, Done } from "../src/client/transport.js";
import { compileSources } from "../src/config/load.js";
import { systemClock } from "../src/core/clock.js";
import { Engine } from "../src/core/engine.js";
import { DEFAULT_INPUT_LIMITS } from "../src/protocol/input-limits.js";
import type {
  CheckRequest,
  CheckResponse,
  ClusterView,
  Limits,
  ReportRequest,
  ReportResponse,
} from "../src/protocol/messages.js";
import { Limiter } from "../src/server/limiter.js";
import { noopMetrics } from "../src/server/metrics.js";
import { StandaloneOwnership } from "../src/server/ownership.js";
import {
  machine,
  median,
  nowNs,
  num,
  parseArgs,
  printTable,
  ratio,
  warnIfBusy,
  writeResult,
} from "./lib/common.js";

const opts = parseArgs({ keys: 100_000, rounds: 7, ops: 2_000_000 });
const m = machine();
const busy = warnIfBusy(m);
console.log(`decide() benchmark: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}; one thread\n`);

const YAML = `domain: bench
descriptors:
  - key: open
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000000000 }
  - key: tight
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000 }
`;
const config = compileSources([{ file: "bench.yaml", text: YAML }]);
const server = new Limiter({
  engine: new Engine(),
  clock: systemClock,
  config,
  ownership: new StandaloneOwnership("local:1"),
  limits: { ...DEFAULT_INPUT_LIMITS, maxBatch: 200_000 },
  metrics: noopMetrics,
});

/** The server's code in this process; answers on the next turn of the event loop. */
const transport: ClientTransport = {
  report(_a: string, req: ReportRequest, _t: number, done: Done<ReportResponse>) {
    setImmediate(() => done(undefined, server.reportAndGetPolicy(req)));
  },
  check(_a: string, req: CheckRequest, _t: number, done: Done<CheckResponse>) {
    setImmediate(() => done(undefined, server.check(req)));
  },
  clusterView(_a: string, _t: number, done: Done<ClusterView>) {
    setImmediate(() => done(undefined, server.clusterView()));
  },
  limits(_a: string, known: string, _t: number, done: Done<Limits>) {
    setImmediate(() => done(undefined, server.getLimits({ knownVersion: known })));
  },
  drop() {},
  close() {},
};

const limiter = new GatewayLimiter({
  servers: ["local:1"],
  clientId: "bench",
  transport,
  clock: systemClock,
  maxKeys: opts.keys * 2,
  maxReportEntries: 200_000,
});
limiter.start();
await limiter.whenReady(5000);

const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

/**
 * Times `ops` calls of `fn(i)` in chunks of 1000, yielding to the event loop every ~5 ms so
 * reports and policies flow as they would in a gateway. Returns calls/s over the timed chunks
 * and the median and p99 of the per-call time of a chunk.
 */
async function timeIt(ops: number, fn: (i: number) => unknown) {
  const CHUNK = 1000;
  const perCall: number[] = [];
  let busyNs = 0n;
  let sinceYield = 0n;
  let sink = 0;
  for (let done = 0; done < ops; done += CHUNK) {
    const t0 = nowNs();
    for (let i = done; i < done + CHUNK; i++) if (fn(i)) sink++;
    const dt = nowNs() - t0;
    busyNs += dt;
    sinceYield += dt;
    perCall.push(Number(dt) / CHUNK);
    if (sinceYield > 5_000_000n) {
      sinceYield = 0n;
      await yieldLoop();
    }
  }
  perCall.sort((a, b) => a - b);
  if (sink === -1) console.log(sink);
  return {
    perSec: ops / (Number(busyNs) / 1e9),
    medianNs: median(perCall),
    p99Ns: perCall[Math.floor(perCall.length * 0.99)]!,
  };
}

async function rounds(name: string, fn: (i: number) => unknown) {
  await timeIt(opts.ops / 4, fn); // warm-up: JIT, first policies
  const rs = [];
  for (let r = 0; r < opts.rounds; r++) rs.push(await timeIt(opts.ops, fn));
  return {
    name,
    perSec: median(rs.map((x) => x.perSec)),
    medianNs: median(rs.map((x) => x.medianNs)),
    p99Ns: median(rs.map((x) => x.p99Ns)),
  };
}

const manyKeys = Array.from({ length: opts.keys }, (_, i) => `bench/open=k${i}`);
const map = new Map<string, number>();
const descriptor = { domain: "bench", entries: [{ key: "open", value: "hot" }] };
const results = [
  await rounds("baseline: Map get + set, 1 key", () =>
    map.set("bench/open=hot", (map.get("bench/open=hot") ?? 0) + 1),
  ),
  await rounds(`baseline: Map get + set, ${num(opts.keys)} keys`, (i) => {
    const k = manyKeys[i % manyKeys.length]!;
    return map.set(k, (map.get(k) ?? 0) + 1);
  }),
  await rounds("baseline: Date.now()", () => Date.now()),
  await rounds("decide(key), 1 key, ALLOW", () => limiter.decide("bench/open=hot")),
  await rounds(`decide(key), ${num(opts.keys)} keys round-robin, ALLOW`, (i) =>
    limiter.decide(manyKeys[i % manyKeys.length]!),
  ),
  await rounds("decide(key), 1 key over its limit (REJECT_FRACTION / REJECT_UNTIL)", () =>
    limiter.decide("bench/tight=hot"),
  ),
  await rounds("decide(descriptor), 1 key (encodes the key per call)", () => limiter.decide(descriptor)),
];
limiter.close();

const mapRate = results[0]!.perSec;
printTable(
  ["what", "calls/s", "vs Map (1 key)", "median ns/call", "p99 ns/call (of 1000-call chunks)"],
  results.map((r) => [r.name, num(r.perSec), ratio(r.perSec, mapRate), num(r.medianNs, 1), num(r.p99Ns, 1)]),
);
const hot = results[3]!;
console.log(
  `\ntargets: median <= 300 ns: ${hot.medianNs <= 300 ? "met" : "NOT met"} (${num(hot.medianNs, 1)} ns); ` +
    `>= 3M decisions/s: ${hot.perSec >= 3e6 ? "met" : "NOT met"} (${num(hot.perSec)}/s)`,
);
const s = limiter.stats();
console.log(
  `reports sent during the run: ${num(s.reportsSent)}, units reported: ${num(s.unitsAdmitted + s.unitsRejected)}`,
);
writeResult("decide", { machine: m, busy, opts, results, reports: s });
