/**
 * What OpenTelemetry tracing costs when off (the default): the Check handler as the gRPC server
 * runs it, bare and inside `traced` (server/spans.ts), called in process so the machine's other
 * load does not drown a difference of nanoseconds. Rounds alternate bare / wrapped (the order
 * swapped every round); the figures are medians over rounds, in ns per call, next to the
 * handler's own cost (CPU time per call, so the machine's other load counts less). Also: tracing on with the API's no-op tracer (no SDK registered).
 *
 *   npx tsx bench/tracing-off.ts [--rounds 31] [--calls 100000]
 */
import type { ServerUnaryCall } from "@grpc/grpc-js";
import { Metadata } from "@grpc/grpc-js";
import { trace } from "@opentelemetry/api";
import { compileSources } from "../src/config/load.js";
import type { CheckRequest, CheckResponse } from "../src/protocol/messages.js";
import { disableTracing, enableTracing } from "../src/protocol/tracing.js";
import { StandaloneOwnership } from "../src/server/ownership.js";
import { checkAttrs, traced } from "../src/server/spans.js";
import { requestPath } from "../src/testkit/in-process.js";
import { machine, parseArgs, printTable, warnIfBusy } from "./lib/common.js";
import { BENCH_CONFIG } from "./lib/wire.js";

const opts = parseArgs({ rounds: 31, calls: 100_000 });
const m = machine();
const busy = warnIfBusy(m);
if (busy) console.log(busy);

const config = compileSources([{ file: "bench.yaml", text: BENCH_CONFIG }]);
const { router } = requestPath(config, new StandaloneOwnership("127.0.0.1:0"));
type Handler = (req: CheckRequest, call: ServerUnaryCall<CheckRequest, CheckResponse>) => unknown;
const bare: Handler = router.check.bind(router);
const wrapped: Handler = traced("Check", router.check.bind(router), checkAttrs);
const call = { metadata: new Metadata() } as ServerUnaryCall<CheckRequest, CheckResponse>;
const reqs: CheckRequest[] = Array.from({ length: 1024 }, (_, i) => ({
  items: [{ key: `bench/k=${i}`, cost: 1 }],
  atomic: false,
  generation: 0,
}));

/** CPU time (user + system) per call, in ns: time spent descheduled on a busy machine is not counted. */
function time(h: Handler, n: number): number {
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) h(reqs[i & 1023]!, call);
  const d = process.cpuUsage(t0);
  return ((d.user + d.system) * 1000) / n;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

// Warm-up: both paths optimised before anything is counted.
time(bare, opts.calls);
time(wrapped, opts.calls);
const a: number[] = [];
const b: number[] = [];
const diffs: number[] = [];
for (let r = 0; r < opts.rounds; r++) {
  let x: number;
  let y: number;
  if (r % 2 === 0) {
    x = time(bare, opts.calls);
    y = time(wrapped, opts.calls);
  } else {
    y = time(wrapped, opts.calls);
    x = time(bare, opts.calls);
  }
  a.push(x);
  b.push(y);
  diffs.push(y - x);
}
enableTracing(trace.getTracer("bench")); // the API's no-op tracer: no SDK registered
time(wrapped, opts.calls);
const noop: number[] = [];
for (let r = 0; r < opts.rounds; r++) noop.push(time(wrapped, opts.calls));
disableTracing();

console.log(
  `tracing off vs bare, ${m.cpuModel}, ${m.nproc} CPUs, load ${m.loadAvg1m}, node ${m.node}, git ${m.git}: ${opts.rounds} rounds x ${opts.calls} Check calls (1 item)`,
);
printTable(
  ["handler", "ns/call (median)", "min", "max"],
  [
    ["bare Router.check", median(a).toFixed(0), Math.min(...a).toFixed(0), Math.max(...a).toFixed(0)],
    ["traced, tracing off", median(b).toFixed(0), Math.min(...b).toFixed(0), Math.max(...b).toFixed(0)],
    [
      "traced, on, no-op tracer",
      median(noop).toFixed(0),
      Math.min(...noop).toFixed(0),
      Math.max(...noop).toFixed(0),
    ],
  ],
);
const d = median(diffs);
console.log(
  `off minus bare, median of the per-round differences: ${d.toFixed(1)} ns/call (${((100 * d) / median(a)).toFixed(2)}% of the handler); rounds' differences from ${Math.min(...diffs).toFixed(0)} to ${Math.max(...diffs).toFixed(0)} ns`,
);
