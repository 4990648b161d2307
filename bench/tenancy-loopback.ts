/**
 * The multi-tenant scenarios (H fair share, I priorities and reserve, J soft limits) over
 * loopback: one real standalone server (a child process), driven in real time from this process,
 * either synchronously (`ShouldRateLimit` over gRPC, one call per request) or by 20 batched
 * gateways (the real `GatewayLimiter` over gRPC, each request at a random one). The same flows,
 * targets and measured spans as `shardlimit bench accuracy` (src/sim/tenancy.ts) runs in
 * simulation.
 *
 *   npx tsx bench/tenancy-loopback.ts [--seconds 25] [--warmup 5] [--only H]
 */
import { decodeKey } from "../src/config/key.js";
import { seededRandom } from "../src/core/random.js";
import { tokenBucket } from "../src/sim/yaml.js";
import { machine, parseArgs, printTable, writeResult } from "./lib/common.js";
import { startLoopback } from "./lib/loopback.js";

const args = parseArgs({ seconds: 25, warmup: 5, only: "", gateways: 20 });

interface Flow {
  descriptor: string;
  /** Requests per second at `t` ms since the start. */
  rate: (t: number) => number;
}

interface Case {
  name: string;
  yaml: string;
  flows: Flow[];
  /** Pass or fail, and figures, from per-flow offered and admitted over the measured span. */
  /**
   * Pass or fail, and figures, from per-flow offered and admitted over the measured span
   * (`seconds` long); `span` sums a flow's series over buckets [a, b) of `bucketMs`, the measured
   * span starting at bucket `from`.
   */
  judge: (
    offered: number[],
    admitted: number[],
    seconds: number,
    series: { admitted: number[][]; offered: number[][]; from: number; buckets: number; bucketMs: number },
  ) => { pass: boolean; detail: string };
}

const within = (x: number, lo: number, hi: number) => x >= lo && x <= hi;
const r4 = (x: number) => Math.round(x * 10_000) / 10_000;

const GROUP = (k: number, weights = "") => `domain: sim
descriptors:
  - key: group
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: ${1000 * k}
      fair_share: { by: tenant${weights} }
    descriptors:
      - key: tenant
      - key: tenant
        value: soft
        rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: ${100 * k}, soft: true }
`;

/**
 * The scenarios with every rate and limit scaled by `k`: 1 for batched gateways (decisions are
 * local); the synchronous runs use k = 0.2, since 5,200 gRPC calls a second from this process
 * and the server on two shared cores would measure the machine, not the limiter.
 */
function cases(k: number): Case[] {
  const steady = (perS: number) => () => perS * k;
  const total = (admitted: number[], s: number) => admitted.reduce((a, b) => a + b, 0) / s / (1000 * k);
  return [
    {
      name: "H. fair share: group 1000/s, one tenant at 5000/s, four at 50/s",
      yaml: GROUP(k),
      flows: [
        { descriptor: "sim/group=g/tenant=heavy", rate: steady(5000) },
        ...["a", "b", "c", "d"].map((t) => ({ descriptor: `sim/group=g/tenant=${t}`, rate: steady(50) })),
      ],
      judge: (o, a, s) => {
        const light = a.slice(1).map((x, i) => r4(x / o[i + 1]!));
        const g = total(a, s);
        return {
          pass: within(g, 0.98, 1.02) && light.every((x) => x >= 0.999),
          detail: `group ${r4(g)}; light ${light.join(" ")}`,
        };
      },
    },
    {
      name: "H. weighted: two tenants at 3000/s, weights 3 and 1",
      yaml: GROUP(k, ", weights: { gold: 3 }"),
      flows: [
        { descriptor: "sim/group=g/tenant=gold", rate: steady(3000) },
        { descriptor: "sim/group=g/tenant=std", rate: steady(3000) },
      ],
      judge: (_o, a, s) => {
        const split = a[0]! / a[1]!;
        const g = total(a, s);
        return {
          pass: within(g, 0.98, 1.02) && within(split, 2.85, 3.15),
          detail: `group ${r4(g)}; split ${r4(split)}`,
        };
      },
    },
    {
      name: "I. priority: limit 1000/s, critical at 300/s, low at 2000/s",
      yaml: tokenBucket(1000 * k),
      flows: [
        { descriptor: "sim/k=v/priority=critical", rate: steady(300) },
        { descriptor: "sim/k=v/priority=low", rate: steady(2000) },
      ],
      judge: (o, a, s) => {
        const critical = a[0]! / o[0]!;
        const g = total(a, s);
        return {
          pass: within(g, 0.98, 1.02) && critical >= 0.999,
          detail: `total ${r4(g)}; critical ${r4(critical)}`,
        };
      },
    },
    {
      name: "I. reserve: critical 0.2, no critical traffic, low at 2000/s",
      yaml: tokenBucket(1000 * k, "      reserve: { critical: 0.2 }\n"),
      flows: [{ descriptor: "sim/k=v/priority=low", rate: steady(2000) }],
      judge: (_o, a, s) => ({
        pass: within(a[0]!, 780 * k * s, 800 * k * s + 80 * k),
        detail: `low ${r4(a[0]! / s / (1000 * k))} of the limit`,
      }),
    },
    {
      name: "J. soft: a soft tenant of 100/s asks 300/s alone, then two tenants fill the group",
      yaml: GROUP(k),
      flows: [
        { descriptor: "sim/group=g/tenant=soft", rate: steady(300) },
        // Alone for the first half of the measured span, then the group is filled.
        ...["x", "y"].map((t) => ({
          descriptor: `sim/group=g/tenant=${t}`,
          rate: (ms: number) =>
            ms >= (args.warmup + (args.seconds - args.warmup) / 2) * 1000 ? 1000 * k : 0,
        })),
      ],
      judge: (_o, _a, _s, { admitted, offered, from, buckets, bucketMs }) => {
        const sum = (xs: number[], a: number, b: number) => xs.slice(a, b).reduce((x, y) => x + y, 0);
        const half = from + (buckets - from) / 2;
        const alone = sum(admitted[0]!, from, half) / sum(offered[0]!, from, half);
        // After the others come in (1 s to settle), the soft tenant's own bucket: 100/s and 100 burst.
        const after = sum(admitted[0]!, half + 2, buckets);
        const afterS = ((buckets - half - 2) * bucketMs) / 1000;
        return {
          pass: alone >= 0.999 && after <= 100 * k * afterS + 100 * k,
          detail: `alone ${r4(alone)} of demand; after the group fills ${r4(after / afterS / (100 * k))} of its own limit`,
        };
      },
    },
  ];
}

async function runCase(c: Case, mode: "sync" | "batched", k: number): Promise<Record<string, unknown>> {
  const lo = await startLoopback(c.yaml, mode === "batched" ? args.gateways : 0);
  const { rpc, gateways } = lo;
  const random = seededRandom(1);
  const requests = c.flows.map((f) => {
    const d = decodeKey(f.descriptor);
    if (typeof d === "string") throw new Error(d);
    return { domain: d.domain, entries: d.entries.map((e) => ({ key: e.key, value: e.value })) };
  });
  const bucketMs = 500;
  const buckets = Math.ceil((args.seconds * 1000) / bucketMs);
  const offered = c.flows.map(() => new Array<number>(buckets).fill(0));
  const admitted = c.flows.map(() => new Array<number>(buckets).fill(0));
  const start = performance.now();
  const next = c.flows.map(() => 0);
  let inFlight = 0;
  let errors = 0;
  // Poisson arrivals per flow, fired by a 1 ms tick: every arrival due by now goes out.
  await new Promise<void>((done) => {
    const tick = setInterval(() => {
      const t = performance.now() - start;
      if (t >= args.seconds * 1000) {
        clearInterval(tick);
        done();
        return;
      }
      for (let f = 0; f < c.flows.length; f++) {
        for (;;) {
          const rate = c.flows[f]!.rate(next[f]!);
          if (rate <= 0) {
            next[f]! += 50;
            if (next[f]! > t) break;
            continue;
          }
          if (next[f]! > t) break;
          const b = Math.min(buckets - 1, Math.floor(next[f]! / bucketMs));
          offered[f]![b]!++;
          if (mode === "batched") {
            const gw = gateways[Math.floor(random() * gateways.length)]!;
            if (gw.decide(requests[f]!, 1)) admitted[f]![b]!++;
          } else {
            inFlight++;
            rpc
              .shouldRateLimit(
                {
                  domain: requests[f]!.domain,
                  descriptors: [{ entries: requests[f]!.entries }],
                  hitsAddend: 0,
                },
                { deadlineMs: 2000 },
              )
              .then(
                (res) => {
                  if (res.overallCode === 1) admitted[f]![b]!++;
                },
                () => errors++,
              )
              .finally(() => inFlight--);
          }
          next[f]! += (-Math.log(1 - random()) * 1000) / rate;
        }
      }
    }, 1);
  });
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 10));
  await lo.stop();
  const from = (args.warmup * 1000) / bucketMs;
  const sum = (xs: number[], a = from, b = buckets) => xs.slice(a, b).reduce((x, y) => x + y, 0);
  const seconds = args.seconds - args.warmup;
  const verdict = c.judge(
    offered.map((x) => sum(x)),
    admitted.map((x) => sum(x)),
    seconds,
    { admitted, offered, from, buckets, bucketMs },
  );
  return {
    scenario: c.name,
    mode,
    scale: k,
    ...verdict,
    errors,
    measured_s: `${args.warmup}-${args.seconds}`,
  };
}

async function main(): Promise<void> {
  const rows: Record<string, unknown>[] = [];
  const modes = [
    { mode: "batched" as const, k: 1 },
    { mode: "sync" as const, k: 0.2 },
  ];
  for (const { mode, k } of modes) {
    for (const c of cases(k)) {
      if (args.only && !c.name.startsWith(args.only)) continue;
      const r = await runCase(c, mode, k);
      rows.push(r);
      console.log(
        `${r.pass ? "pass" : "FAIL"}  ${mode.padEnd(7)}  ${c.name}: ${r.detail}${r.errors ? ` (errors ${r.errors})` : ""}`,
      );
    }
  }
  printTable(
    ["scenario", "mode", "scale", "pass", "figures"],
    rows.map((r) => [
      String(r.scenario),
      String(r.mode),
      String(r.scale),
      r.pass ? "yes" : "NO",
      String(r.detail),
    ]),
  );
  const file = writeResult("tenancy-loopback", { machine: machine(), args, rows });
  console.log(
    `${rows.filter((r) => r.pass).length} passed, ${rows.filter((r) => !r.pass).length} failed; ${file}`,
  );
}

await main();
