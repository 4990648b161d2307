import type { ScenarioResult } from "./accuracy.js";
import { type Flow, simulateFlows } from "./flows.js";
import { tokenBucket } from "./yaml.js";

/**
 * The multi-tenant scenarios: H (fair share inside a group's limit) and I (priorities), each in
 * the modes the feature covers, as `shardlimit bench accuracy` reports them.
 */

export interface TenancyScenario {
  name: string;
  run(): ScenarioResult;
}

const steady = (perS: number) => () => perS;

function groupYaml(algorithm: string, weights = ""): string {
  return `domain: sim
descriptors:
  - key: group
    rate_limit:
      algorithm: ${algorithm}
      unit: second
      requests_per_unit: 1000
      fair_share: { by: tenant${weights} }
    descriptors:
      - key: tenant
`;
}

interface Measured {
  offered: number[];
  admitted: number[];
  /** Admitted per second, all flows together. */
  total: number;
  seconds: number;
  wallMs: number;
}

function measure(
  yaml: string,
  flows: Flow[],
  gateways: number,
  seconds: number,
  from: number,
  seed: number,
): Measured {
  const run = simulateFlows({ yaml, flows, servers: 3, gateways, seconds, seed, bucketMs: 1000 });
  const sum = (xs: number[]) => xs.slice(from, seconds).reduce((a, b) => a + b, 0);
  const offered = run.offered.map(sum);
  const admitted = run.admitted.map(sum);
  const span = seconds - from;
  return {
    offered,
    admitted,
    total: admitted.reduce((a, b) => a + b, 0) / span,
    seconds: span,
    wallMs: run.wallMs,
  };
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

function result(
  name: string,
  m: Measured,
  from: number,
  to: number,
  target: string,
  pass: boolean,
  detail: Record<string, number | number[] | string>,
): ScenarioResult {
  const offered = m.offered.reduce((a, b) => a + b, 0);
  const admitted = m.admitted.reduce((a, b) => a + b, 0);
  return {
    name,
    limit: 1000,
    offered,
    admitted,
    ratio: round(m.total / 1000),
    pass,
    target,
    from_s: from,
    to_s: to,
    ideal_admitted: Math.min(offered, 1000 * m.seconds),
    detail,
    sim_wall_ms: Math.round(m.wallMs),
    reports: 0,
    failed_reports: 0,
  };
}

const within = (x: number, lo: number, hi: number) => x >= lo && x <= hi;

export function tenancyScenarios(quick: boolean, seed: number): TenancyScenario[] {
  const seconds = quick ? 20 : 40;
  const from = 5;
  const modes = [
    { label: "batched, 20 gateways", gateways: 20 },
    { label: "sync, ShouldRateLimit", gateways: 0 },
  ];
  const out: TenancyScenario[] = [];
  for (const mode of modes) {
    out.push({
      name: `H. fair share (${mode.label}): group of 1000/s, one tenant at 5000/s and four at 50/s`,
      run: () => {
        const flows: Flow[] = [
          { descriptor: "sim/group=g/tenant=heavy", rate: steady(5000) },
          ...["a", "b", "c", "d"].map((t) => ({ descriptor: `sim/group=g/tenant=${t}`, rate: steady(50) })),
        ];
        const m = measure(groupYaml("token_bucket"), flows, mode.gateways, seconds, from, seed);
        const light = m.admitted.slice(1).map((a, i) => round(a / m.offered[i + 1]!));
        const ratio = m.total / 1000;
        return result(
          `H. fair share (${mode.label}): group of 1000/s, one tenant at 5000/s and four at 50/s`,
          m,
          from,
          seconds,
          "group [0.98, 1.02]; each light tenant >= 0.999 of its demand",
          within(ratio, 0.98, 1.02) && light.every((x) => x >= 0.999),
          { light_share_of_demand: light, heavy_per_s: round(m.admitted[0]! / m.seconds) },
        );
      },
    });
    out.push({
      name: `H. weighted (${mode.label}): two tenants at 3000/s with weights 3 and 1`,
      run: () => {
        const flows: Flow[] = [
          { descriptor: "sim/group=g/tenant=gold", rate: steady(3000) },
          { descriptor: "sim/group=g/tenant=std", rate: steady(3000) },
        ];
        const m = measure(
          groupYaml("token_bucket", ", weights: { gold: 3 }"),
          flows,
          mode.gateways,
          seconds,
          from,
          seed,
        );
        const split = m.admitted[0]! / m.admitted[1]!;
        const ratio = m.total / 1000;
        return result(
          `H. weighted (${mode.label}): two tenants at 3000/s with weights 3 and 1`,
          m,
          from,
          seconds,
          "group [0.98, 1.02]; gold:std within 5% of 3:1",
          within(ratio, 0.98, 1.02) && within(split, 2.85, 3.15),
          { split: round(split) },
        );
      },
    });
  }
  for (const mode of modes) out.push(softScenario(mode.label, mode.gateways, seed));
  for (const mode of modes) {
    const iName = `I. priority (${mode.label}): limit 1000/s, critical at 300/s, low at 2000/s`;
    out.push({
      name: iName,
      run: () => {
        const flows: Flow[] = [
          { descriptor: "sim/k=v/priority=critical", rate: steady(300) },
          { descriptor: "sim/k=v/priority=low", rate: steady(2000) },
        ];
        const m = measure(tokenBucket(1000), flows, mode.gateways, seconds, from, seed);
        const critical = m.admitted[0]! / m.offered[0]!;
        const ratio = m.total / 1000;
        return result(
          iName,
          m,
          from,
          seconds,
          "total [0.98, 1.02]; critical >= 0.999 of its demand",
          within(ratio, 0.98, 1.02) && critical >= 0.999,
          { critical_share_of_demand: round(critical) },
        );
      },
    });
    const rName = `I. reserve (${mode.label}): reserve critical 0.2, no critical traffic, low at 2000/s`;
    out.push({
      name: rName,
      run: () => {
        const flows: Flow[] = [{ descriptor: "sim/k=v/priority=low", rate: steady(2000) }];
        const m = measure(
          tokenBucket(1000, "      reserve: { critical: 0.2 }\n"),
          flows,
          mode.gateways,
          seconds,
          from,
          seed,
        );
        return result(
          rName,
          m,
          from,
          seconds,
          "low <= 0.8 of the limit (and >= 0.78), give or take one pace burst (0.1 s of its share)",
          // The span starts and ends anywhere in the pacing: low may have one burst of its pace
          // (80 requests) banked at the start.
          within(m.admitted[0]!, 780 * m.seconds, 800 * m.seconds + 80),
          { low_per_s: round(m.admitted[0]! / m.seconds) },
        );
      },
    });
  }
  return out;
}

const SOFT_YAML = `domain: sim
descriptors:
  - key: group
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 1000
      fair_share: { by: tenant }
    descriptors:
      - key: tenant
        value: soft
        rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100, soft: true }
      - key: tenant
`;

/**
 * J: a soft tenant limited to 100/s asks 300/s. Alone in its group of 1000/s it gets all of it,
 * borrowing the idle capacity; at 10 s two other tenants fill the group and it must be back at
 * its own limit within a second.
 */
function softScenario(label: string, gateways: number, seed: number): TenancyScenario {
  const name = `J. soft (${label}): a soft tenant of 100/s asks 300/s in an idle group of 1000/s; at 10 s others fill it`;
  return {
    name,
    run: () => {
      const fillAt = 10_000;
      const flows: Flow[] = [
        { descriptor: "sim/group=g/tenant=soft", rate: steady(300) },
        { descriptor: "sim/group=g/tenant=x", rate: (t) => (t >= fillAt ? 1000 : 0) },
        { descriptor: "sim/group=g/tenant=y", rate: (t) => (t >= fillAt ? 1000 : 0) },
      ];
      const seconds = 20;
      const bucketMs = 100;
      const run = simulateFlows({ yaml: SOFT_YAML, flows, servers: 3, gateways, seconds, seed, bucketMs });
      const soft = run.admitted[0]!;
      const offered = run.offered[0]!;
      const sum = (xs: number[], from: number, to: number) => xs.slice(from, to).reduce((a, b) => a + b, 0);
      // Alone (2-10 s): its whole demand.
      const aloneShare = sum(soft, 20, 100) / sum(offered, 20, 100);
      // Back within its own limit (a bucket of 100/s, burst 100): the first moment from which to
      // every later one it admits no more than the bucket would (100/s over the span, plus 100).
      let backAt = Number.POSITIVE_INFINITY;
      for (let b = fillAt / bucketMs; b < soft.length; b++) {
        let ok = true;
        for (let e = b + 1; e <= soft.length && ok; e++) {
          if (sum(soft, b, e) > (100 * (e - b) * bucketMs) / 1000 + 100) ok = false;
        }
        if (ok) {
          backAt = b * bucketMs - fillAt;
          break;
        }
      }
      const afterPerS = sum(soft, 150, 200) / 5;
      const groupPerS = run.admitted.reduce((a, xs) => a + sum(xs, 150, 200), 0) / 5;
      const offeredAll = run.offered.reduce((a, xs) => a + sum(xs, 20, 200), 0);
      const admittedAll = run.admitted.reduce((a, xs) => a + sum(xs, 20, 200), 0);
      return {
        name,
        limit: 1000,
        offered: offeredAll,
        admitted: admittedAll,
        ratio: round(groupPerS / 1000),
        pass: aloneShare >= 0.999 && backAt < 1000 && within(groupPerS / 1000, 0.98, 1.02),
        target:
          "alone >= 0.999 of its 300/s; back within its own bucket (100/s, burst 100) within 1 s of the group filling; group [0.98, 1.02]",
        from_s: 2,
        to_s: seconds,
        ideal_admitted: 0,
        detail: {
          alone_share_of_demand: round(aloneShare),
          back_within_ms: Number.isFinite(backAt) ? backAt : -1,
          soft_after_per_s: round(afterPerS),
        },
        sim_wall_ms: Math.round(run.wallMs),
        reports: 0,
        failed_reports: 0,
      };
    },
  };
}
