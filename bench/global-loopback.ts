/**
 * Scenario Q over loopback with real processes (issue 14): a global limit of 1000/s over three
 * regions offered 2000/s in 70/20/10, each region one standalone `shardlimit serve` with
 * `--global-tier` through a CONNECT proxy (its own thread) that delays every chunk 50 ms each way (and can be cut), a
 * standalone global tier, and gateways (the real GatewayLimiter over gRPC) in this process: three,
 * two and one heavy per region and a light one (10/s) each. Region A is cut off for 10 s.
 * Records the global admitted over the limit, region A against its last share while cut off, and
 * the light callers.
 *
 *   npm run bench:global-loopback -- [--steady 15] [--cut 10] [--after 8] [--delay 50]
 */
import { runGlobalLoopback, scenarioQRegions } from "../src/testkit/global-loopback.js";
import { lagVerdict } from "../src/testkit/paced-load.js";
import { machine, parseArgs, writeResult } from "./lib/common.js";

const args = parseArgs({ steady: 15, cut: 10, after: 8, delay: 50 });
const r = await runGlobalLoopback({
  limit: 1000,
  regions: scenarioQRegions(),
  delayMs: args.delay,
  steadyS: args.steady,
  cutS: args.cut,
  afterS: args.after,
  cutRegion: 0,
});
const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
const pass =
  r.globalRatio >= 0.97 &&
  r.globalRatio <= 1.03 &&
  r.cutOverLastShare >= 0.97 &&
  r.cutOverLastShare <= 1.03 &&
  r.lightShare.every((x) => x >= 0.99);
const out = {
  pass,
  global_ratio: r4(r.globalRatio),
  region_admitted_per_s: r.regionPerS.map((x) => Math.round(x)),
  last_share_per_s: Math.round(r.lastSharePerS),
  mode_in_cut: r.modeInCut,
  cut_admitted_per_s: Math.round(r.cutPerS),
  cut_over_last_share: r4(r.cutOverLastShare),
  global_ratio_after_cut: r4(r.afterRatio),
  light_share_of_demand: r.lightShare.map(r4),
  generator_lag: { ...r.lag, verdict: lagVerdict(r.lag) },
  machine: machine(),
};
console.log(JSON.stringify(out, null, 2));
console.log(`written to ${writeResult("global-loopback", out)}`);
process.exit(pass ? 0 : 1);
