import { costQuotaScenarios } from "./cost-quota.js";
import { globalScenarios } from "./global.js";
import { hostGuardScenarios } from "./host-guard.js";
import { poolScenarios } from "./pool.js";
import { settlementScenarios } from "./settlement.js";
import { type SimulationRun, type SimulationSpec, simulate } from "./simulation.js";
import { tenancyScenarios } from "./tenancy.js";
import { waitingScenarios } from "./waiting.js";
import { tokenBucket } from "./yaml.js";

/** One scenario's outcome, as `shardlimit bench accuracy --json` writes it. */
export interface ScenarioResult {
  name: string;
  /** Units per second the limit allows (per minute limits are quoted per second too). */
  limit: number;
  /** Units offered and admitted in the measured span. */
  offered: number;
  admitted: number;
  /** Admitted over the most that could rightly be admitted in the measured span. */
  ratio: number;
  pass: boolean;
  /** The bounds `ratio` must meet. */
  target: string;
  /** Measured span, seconds since traffic started. */
  from_s: number;
  to_s: number;
  /** What an exact, central, synchronous limiter admits of the same arrivals (not a bound). */
  ideal_admitted: number;
  /** Extra figures some scenarios check (E: the rate after each shift). */
  detail?: Record<string, number | number[] | string>;
  sim_wall_ms: number;
  reports: number;
  failed_reports: number;
}

interface Scenario {
  name: string;
  limitPerS: number;
  spec: SimulationSpec;
  /** Measured span in seconds since traffic started. */
  from: number;
  to: number;
  /** The most that could rightly be admitted in the span (per second, when demand exceeds it). */
  capacityPerS: number;
  min: number;
  max: number;
  extra?: (run: SimulationRun) => { pass: boolean; detail: Record<string, number | number[] | string> };
}

function sum(xs: readonly number[], from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to && i < xs.length; i++) s += xs[i]!;
  return s;
}

/** Gateway 0 sends `share` of `total` per second; the others split the rest evenly. */
function skewed(total: number, gateways: number, share: number) {
  return (g: number) => (g === 0 ? total * share : (total * (1 - share)) / (gateways - 1));
}

/** The scenarios of issue 4, full length or `quick`. Times are virtual. */
export function scenarios(quick: boolean, seed: number): Scenario[] {
  const key = "sim/k=v";
  const long = quick ? 20 : 60;
  const shiftPhases = quick ? 4 : 10;
  const fLen = quick ? 60 : 120;
  const gLen = 600;
  /** 20 gateways on a 1000/s token bucket, one of them sending half of `total`. */
  const skewedSpec = (total: number): SimulationSpec => ({
    yaml: tokenBucket(1000),
    key,
    servers: 3,
    gateways: 20,
    seconds: long,
    rate: skewed(total, 20, 0.5),
    seed,
  });
  return [
    {
      name: "A. steady overload: 20 gateways, 2000/s offered, one sending half",
      limitPerS: 1000,
      spec: skewedSpec(2000),
      from: 2,
      to: long,
      capacityPerS: 1000,
      min: 0.99,
      max: 1.02,
    },
    {
      name: "B. under the limit: 900/s offered over 20 gateways, one sending half",
      limitPerS: 1000,
      spec: skewedSpec(900),
      from: 2,
      to: long,
      capacityPerS: 1000,
      min: 0.999,
      max: 1.0,
    },
    {
      name: "C. fairness (Uber's case): 10 gateways, one at 500/s and nine at 10/s",
      limitPerS: 1000,
      spec: {
        yaml: tokenBucket(1000),
        key,
        servers: 3,
        gateways: 10,
        seconds: long,
        rate: (g) => (g === 0 ? 500 : 10),
        seed,
      },
      from: 2,
      to: long,
      capacityPerS: 1000,
      min: 0.999,
      max: 1.0,
    },
    {
      name: "D. fragmentation: limit 100/s over 500 gateways, bursts of 3 at random times, 80/s in all",
      limitPerS: 100,
      spec: {
        // Each gateway sees the key every ~17 s: the optimistic allowance must cover a burst.
        yaml: tokenBucket(100, "      local_allowance: 3\n"),
        key,
        servers: 3,
        gateways: 500,
        seconds: long,
        rate: () => 80 / 3 / 500,
        burst: 3,
        seed,
      },
      from: 0,
      to: long,
      capacityPerS: 100,
      min: 0.999,
      max: 1.0,
    },
    {
      name: "E. load shift: 10 gateways, 2000/s, the heavy sender changes every 5 s",
      limitPerS: 1000,
      spec: {
        yaml: tokenBucket(1000),
        key,
        servers: 3,
        gateways: 10,
        seconds: shiftPhases * 5,
        rate: (g, t) => (g === Math.floor(t / 5000) % 10 ? 1800 : 200 / 9),
        rateStepMs: 5000,
        seed,
      },
      from: 2,
      to: shiftPhases * 5,
      capacityPerS: 1000,
      min: 0.98,
      max: 1.02,
      extra: (run) => {
        // The admitted rate from 300 ms after each shift to the next one, against the limit.
        const per = 5000 / run.bucketMs;
        const skip = 300 / run.bucketMs;
        const rates: number[] = [];
        for (let p = 1; p < shiftPhases; p++) {
          const from = p * per + skip;
          const to = (p + 1) * per;
          rates.push(round((sum(run.admittedSeries, from, to) / ((to - from) * run.bucketMs)) * 1000));
        }
        const worst = Math.max(...rates.map((r) => Math.abs(r / 1000 - 1)));
        return {
          pass: worst <= 0.02,
          detail: { rate_after_shift_per_s: rates, worst_deviation: round(worst) },
        };
      },
    },
    {
      name: "F. owner crash mid-window: fixed window 60000/min, 20 gateways at 2000/s, the key's owner SIGKILLed at 30 s into the minute",
      limitPerS: 1000,
      spec: {
        yaml: `domain: sim
descriptors:
  - key: k
    rate_limit:
      algorithm: fixed_window
      unit: minute
      requests_per_unit: 60000
`,
        key,
        servers: 3,
        gateways: 20,
        seconds: fLen,
        rate: () => 100,
        crashAtMs: (fLen - 30) * 1000,
        leaseMs: 3000,
        seed,
      },
      from: fLen - 60,
      to: fLen,
      capacityPerS: 1000,
      min: 0.95,
      max: 1.05,
    },
    {
      name: "G. cost-weighted: 1 to 4000 tokens per request (log-uniform), limit 100000 tokens/min, 2x offered",
      limitPerS: 100_000 / 60,
      spec: {
        yaml: `domain: sim
descriptors:
  - key: k
    rate_limit:
      algorithm: token_bucket
      unit: minute
      requests_per_unit: 100000
      cost_unit: tokens
`,
        key,
        servers: 3,
        gateways: 10,
        seconds: gLen,
        // Mean cost 4000/ln(4000) ~ 482 tokens; 200000 tokens/min offered.
        rate: () => 200_000 / 60 / 482 / 10,
        cost: (r) => Math.max(1, Math.round(Math.exp(r() * Math.log(4000)))),
        seed,
      },
      // The bucket starts full (a minute's worth); measure once that start-up burst is spent.
      from: 90,
      to: gLen,
      capacityPerS: 100_000 / 60,
      min: 0.98,
      max: 1.02,
    },
  ];
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}

export function runScenario(s: Scenario): ScenarioResult {
  const run = simulate(s.spec);
  const perS = 1000 / run.bucketMs;
  const from = s.from * perS;
  const to = s.to * perS;
  const offered = sum(run.offeredSeries, from, to);
  const admitted = sum(run.admittedSeries, from, to);
  const right = Math.min(offered, s.capacityPerS * (s.to - s.from));
  const ratio = right > 0 ? admitted / right : 1;
  const extra = s.extra?.(run);
  const ideal = sum(run.idealSeries, from, to);
  return {
    name: s.name,
    limit: round(s.limitPerS),
    offered: round(offered),
    admitted: round(admitted),
    ratio: round(ratio),
    pass: ratio >= s.min && ratio <= s.max && (extra?.pass ?? true),
    target: `[${s.min}, ${s.max}]${s.extra ? " and each shift back within 2% after 300 ms" : ""}`,
    from_s: s.from,
    to_s: s.to,
    // For comparison: an exact central limiter deciding every request synchronously.
    ideal_admitted: round(ideal),
    ...(extra ? { detail: extra.detail } : {}),
    sim_wall_ms: Math.round(run.wallMs),
    reports: run.reports,
    failed_reports: run.failedReports,
  };
}

export interface AccuracyOptions {
  quick: boolean;
  seed?: number;
  only?: string;
  /** Network: one-way delay and loss probability of every message (defaults 0.25-0.5 ms, 0). */
  delayMs?: number;
  loss?: number;
}

export function runAccuracy(opts: AccuracyOptions): ScenarioResult[] {
  const picked = (name: string) => opts.only === undefined || name.startsWith(opts.only);
  const list = scenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  const single = list.map((s) =>
    runScenario({
      ...s,
      spec: {
        ...s.spec,
        ...(opts.delayMs !== undefined ? { delayMs: opts.delayMs, jitterMs: opts.delayMs / 2 } : {}),
        ...(opts.loss !== undefined ? { loss: opts.loss } : {}),
      },
    }),
  );
  // Tenants and classes (H, I): several flows each; the network options do not apply to them.
  const tenancy = tenancyScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  // Exact settlement (K): reserve and settle, synchronous and batched.
  const settlement = settlementScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  // Callers waiting for quota (L): closed loops; the network options do not apply either.
  const waiting = waitingScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  // Resource quotas measured after serving (M): begin with a predicted cost, finish with the measured.
  const costQuota = costQuotaScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  // The host guard (P): local shedding by class on a host's own load gauge.
  const hostGuard = hostGuardScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  // A global limit across regions (Q): regional clusters and a global one, 50 ms apart.
  const global = globalScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  // Pools of backends (N, O; issue 14): the backends' load closes the loop; network options do not apply.
  const pools = poolScenarios(opts.quick, opts.seed ?? 1).filter((s) => picked(s.name));
  return [
    ...single,
    ...tenancy.map((s) => s.run()),
    ...settlement.map((s) => s.run()),
    ...waiting.map((s) => s.run()),
    ...costQuota.map((s) => s.run()),
    ...hostGuard.map((s) => s.run()),
    ...global.map((s) => s.run()),
    ...pools.map((s) => s.run()),
  ];
}
