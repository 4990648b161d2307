import { GatewayLimiter } from "../client/gateway-limiter.js";
import type { Ticket } from "../client/ticket.js";
import { decodeKey } from "../config/key.js";
import { compileSources } from "../config/load.js";
import { ManualClock } from "../core/clock.js";
import { seededRandom } from "../core/random.js";
import type { ScenarioResult } from "./accuracy.js";
import { SimNetwork } from "./network.js";
import { SimCluster } from "./sim-cluster.js";
import { T0 } from "./simulation.js";

/**
 * Scenario K (exact settlement): LLM requests reserve 4,000 tokens and use 300 to 1,500
 * (uniform), learned when the response ends 0.5 to 3 s later; the limit is 100,000 tokens a
 * minute and the requests offered would use three times that. What counts is the actual tokens
 * admitted: charging only the estimates admits about 0.23 of the limit in them; settling each
 * request (refunding what it did not use) should admit the limit. Run synchronously (Check with a
 * ticket at the key's owner, then Settle) and batched (GatewayLimiter reserve and settle), each
 * with and without settlement, on the simulated cluster and virtual clock.
 */

export const LIMIT_PER_MIN = 100_000;
export const ESTIMATE = 4000;
export const KEY = "sim/k=v";

/** K's limit; `burst` lines added as given (the bench over loopback spends a smaller one first). */
export function settlementYaml(extra = ""): string {
  return `domain: sim
descriptors:
  - key: k
    rate_limit:
      algorithm: token_bucket
      unit: minute
      requests_per_unit: ${LIMIT_PER_MIN}
      cost_unit: tokens
${extra}`;
}
const YAML = settlementYaml();

export interface SettlementSpec {
  mode: "sync" | "batched";
  /** Settle each request with its actual cost (false: the estimate stays charged). */
  settle: boolean;
  seconds: number;
  /** Measured from here (s since traffic started): the bucket starts full. */
  from: number;
  seed: number;
  /** Batched gateways the requests are spread over. */
  gateways?: number;
}

export interface SettlementRun {
  /** Actual tokens of the requests offered and admitted in the measured span. */
  offered: number;
  admitted: number;
  requestsAdmitted: number;
  /** Admitted actual tokens per second over the limit per second. */
  ratio: number;
  wallMs: number;
}

export function simulateSettlement(spec: SettlementSpec): SettlementRun {
  const started = performance.now();
  const random = seededRandom(spec.seed);
  const clock = new ManualClock(T0 - 1000);
  const config = compileSources([{ file: "sim.yaml", text: YAML }]);
  const cluster = new SimCluster(clock, config, 3);
  const net = new SimNetwork(clock, cluster, { delayMs: 0.25, jitterMs: 0.25, loss: 0, random });
  const addresses = cluster.servers.map((s) => s.member.address);
  const parts = decodeKey(KEY);
  if (typeof parts === "string") throw new Error(parts);
  const resolved = config.resolve(parts.domain, parts.entries);
  if (typeof resolved !== "object") throw new Error(`no limit for ${KEY}`);
  const gateways = Array.from({ length: spec.mode === "batched" ? (spec.gateways ?? 10) : 0 }, (_, g) => {
    const gw = new GatewayLimiter({ servers: addresses, clientId: `gw${g}`, transport: net, clock, random });
    gw.start();
    return gw;
  });
  const end = T0 + spec.seconds * 1000;
  const measureFrom = T0 + spec.from * 1000;
  // Three times the limit in actual tokens (mean 900 a request).
  const perS = (3 * LIMIT_PER_MIN) / 60 / 900;
  let offered = 0;
  let admitted = 0;
  let requestsAdmitted = 0;

  /** Admits one request's estimate; a function that settles it with the actual cost, or undefined. */
  const admit = (): ((actual: number) => void) | undefined => {
    if (spec.mode === "batched") {
      const gw = gateways[Math.floor(random() * gateways.length)]!;
      const ticket: Ticket | null = gw.reserve(KEY, ESTIMATE);
      return ticket === null ? undefined : (actual) => gw.settle(ticket, actual);
    }
    const owner = cluster.ownerOf(resolved.shardKey).limiter;
    const r = owner.check({
      items: [{ key: KEY, cost: ESTIMATE, ticket: true }],
      atomic: false,
      generation: 0,
    }).results[0]!;
    if (r.allowed !== true) return undefined;
    const ticketId = r.ticketId!;
    return (actual) => {
      const s = owner.settle({ key: KEY, delta: 0, generation: 0, ticketId, actual: [actual] });
      if (s.error) throw new Error(`settle failed: ${s.error.message}`);
    };
  };

  const arrive = (): void => {
    const now = clock.now();
    const actual = Math.round(300 + random() * 1200);
    const duration = 500 + random() * 2500;
    const settle = admit();
    const measured = now >= measureFrom;
    if (measured) offered += actual;
    if (settle !== undefined) {
      if (measured) {
        admitted += actual;
        requestsAdmitted++;
      }
      if (spec.settle) clock.after(duration, () => settle(actual));
    }
    const next = (-Math.log(1 - random()) * 1000) / perS;
    if (now + next < end) clock.after(next, arrive);
  };
  clock.after(1000 + (-Math.log(1 - random()) * 1000) / perS, arrive);
  clock.runUntil(end);
  for (const gw of gateways) gw.close();
  const span = spec.seconds - spec.from;
  return {
    offered,
    admitted,
    requestsAdmitted,
    ratio: admitted / ((LIMIT_PER_MIN / 60) * span),
    wallMs: performance.now() - started,
  };
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

export interface SettlementScenario {
  name: string;
  run(): ScenarioResult;
}

const MIN = 0.97;
const MAX = 1.02;

/** Scenario K in both modes, as `shardlimit bench accuracy` reports it. */
export function settlementScenarios(quick: boolean, seed: number): SettlementScenario[] {
  const seconds = quick ? 300 : 600;
  const from = 90;
  const modes = [
    { mode: "sync" as const, label: "sync, Check with a ticket then Settle" },
    { mode: "batched" as const, label: "batched, 10 gateways, reserve then settle" },
  ];
  return modes.map(({ mode, label }) => {
    const name = `K. exact settlement (${label}): reserve 4000 tokens, use 300-1500, limit 100000 tokens/min, 3x offered`;
    return {
      name,
      run: () => {
        const settled = simulateSettlement({ mode, settle: true, seconds, from, seed });
        const estimates = simulateSettlement({ mode, settle: false, seconds, from, seed });
        const span = seconds - from;
        return {
          name,
          limit: round(LIMIT_PER_MIN / 60),
          offered: settled.offered,
          admitted: settled.admitted,
          ratio: round(settled.ratio),
          pass: settled.ratio >= MIN && settled.ratio <= MAX,
          target: `actual tokens admitted [${MIN}, ${MAX}] of the limit`,
          from_s: from,
          to_s: seconds,
          ideal_admitted: Math.round((LIMIT_PER_MIN / 60) * span),
          detail: {
            requests_admitted: settled.requestsAdmitted,
            without_settlement_ratio: round(estimates.ratio),
            without_settlement_requests: estimates.requestsAdmitted,
          },
          sim_wall_ms: Math.round(settled.wallMs + estimates.wallMs),
          reports: 0,
          failed_reports: 0,
        };
      },
    };
  });
}
