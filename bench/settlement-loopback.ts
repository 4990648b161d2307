/**
 * Scenario K (exact settlement) over loopback: one real standalone server (a child process),
 * requests that reserve 4,000 tokens and use 300 to 1,500 (uniform), learned 0.5 to 3 s later;
 * 100,000 tokens a minute; three times that offered in actual tokens. Synchronous (`Check` with a
 * ticket over gRPC, then `Settle` by ticket) and batched (10 real `GatewayLimiter`s: `reserve`,
 * then `settle`), each with and without settlement. What counts: the actual tokens admitted over
 * the limit. The bucket is given a burst of 20,000 tokens, 12 s of refill (the simulation's full
 * minute of burst would take minutes of real time to spend before the measured span; a burst
 * much below a few estimates would lose refunds, which a bucket takes back only up to its burst).
 *
 *   npx tsx bench/settlement-loopback.ts [--seconds 120] [--warmup 30]
 */
import { seededRandom } from "../src/core/random.js";
import { ESTIMATE, KEY, LIMIT_PER_MIN, settlementYaml } from "../src/sim/settlement.js";
import { machine, parseArgs, printTable, writeResult } from "./lib/common.js";
import { startLoopback } from "./lib/loopback.js";

const args = parseArgs({ seconds: 120, warmup: 30, gateways: 10 });

const CONFIG = settlementYaml("      burst: 20000\n");

interface Run {
  mode: "sync" | "batched";
  settle: boolean;
  ratio: number;
  requests: number;
  errors: number;
}

async function run(mode: "sync" | "batched", settle: boolean): Promise<Run> {
  const lo = await startLoopback(CONFIG, mode === "batched" ? args.gateways : 0);
  const { rpc, gateways } = lo;
  const random = seededRandom(1);
  const perS = (3 * LIMIT_PER_MIN) / 60 / 900;
  const start = performance.now();
  let admitted = 0;
  let requests = 0;
  let errors = 0;
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  const arrive = async (): Promise<void> => {
    const at = performance.now() - start;
    const actual = Math.round(300 + random() * 1200);
    const duration = 500 + random() * 2500;
    const measured = at >= args.warmup * 1000;
    let settleIt: (() => void) | undefined;
    if (mode === "batched") {
      const gw = gateways[Math.floor(random() * gateways.length)]!;
      const ticket = gw.reserve(KEY, ESTIMATE);
      if (ticket !== null) settleIt = () => gw.settle(ticket, actual);
    } else {
      try {
        const r = (
          await rpc.check({
            items: [{ key: KEY, cost: ESTIMATE, ticket: true }],
            atomic: false,
            generation: 0,
          })
        ).results[0]!;
        if (r.allowed === true) {
          const ticketId = r.ticketId!;
          settleIt = () => {
            rpc
              .settle({ key: KEY, delta: 0, generation: 0, ticketId, actual: [actual] })
              .catch(() => errors++);
          };
        }
      } catch {
        errors++;
      }
    }
    if (settleIt !== undefined) {
      if (measured) {
        admitted += actual;
        requests++;
      }
      if (settle) later(duration, settleIt);
    }
  };
  await new Promise<void>((done) => {
    const next = () => {
      const gap = (-Math.log(1 - random()) * 1000) / perS;
      later(gap, () => {
        if (performance.now() - start >= args.seconds * 1000) return done();
        void arrive();
        next();
      });
    };
    next();
  });
  for (const t of timers) clearTimeout(t);
  await lo.stop();
  const span = args.seconds - args.warmup;
  return { mode, settle, ratio: admitted / ((LIMIT_PER_MIN / 60) * span), requests, errors };
}

async function main(): Promise<void> {
  const runs: Run[] = [];
  for (const mode of ["sync", "batched"] as const) {
    for (const settle of [true, false]) {
      const r = await run(mode, settle);
      runs.push(r);
      console.log(
        `${mode.padEnd(7)} ${settle ? "settled  " : "estimates"} actual tokens admitted ${r.ratio.toFixed(4)} of the limit (${r.requests} requests${r.errors ? `, ${r.errors} errors` : ""})`,
      );
    }
  }
  printTable(
    ["mode", "settlement", "actual tokens admitted / limit", "requests", "pass [0.97, 1.02]"],
    runs.map((r) => [
      r.mode,
      r.settle ? "yes" : "no (estimates only)",
      r.ratio.toFixed(4),
      r.requests,
      r.settle ? (r.ratio >= 0.97 && r.ratio <= 1.02 ? "yes" : "NO") : "-",
    ]),
  );
  const file = writeResult("settlement-loopback", { machine: machine(), args, runs });
  console.log(file);
}

await main();
