/**
 * What waiting for quota costs in CPU, on real processes: 50 callers wait in closed loops against
 * one real standalone server (a child process) on a 100/s token bucket, for `--seconds` (10).
 *  (a) gateway: `GatewayLimiter.wait` (timeout 500 ms) in this process, batched to the server;
 *  (b) server: `Check` with `max_wait_ms` 500, each caller one call at a time;
 *  (c) for comparison, plain `Check` calls paced by the callers at the limit (no waiting).
 * Reported per mode: admitted per second, timeouts, and the CPU seconds of this process and of the
 * server over the measured span (after a warm-up), next to the same span with no callers.
 * After an admission a caller does its work (`--workMs`, 10) before it waits again. Without it the
 * gateway's first policy, an ALLOW valid until the next report's answer, lets a loop of resolved
 * promises admit some 100,000 requests in its first 100 ms, a debt the bucket takes a quarter of
 * an hour to pay back; with it the start-up debt is a few hundred units, paid back within the
 * warm-up (`--warmup`, 8 s).
 *
 *   npx tsx bench/wait-cpu.ts [--seconds 10] [--callers 50] [--workMs 10] [--warmup 8]
 */
import { createLimiter } from "../src/client/create.js";
import { connect } from "../src/protocol/rpc.js";
import { num, parseArgs, printTable, writeResult } from "./lib/common.js";
import { spawnServer } from "./lib/spawn-server.js";

const args = parseArgs({ seconds: 10, callers: 50, warmup: 8, workMs: 10 });

const CONFIG = `domain: w
descriptors:
  - key: k
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100 }
`;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Span {
  mode: string;
  admittedPerS: number;
  timeouts: number;
  /** CPU seconds over the measured span: this (caller) process, and the server. */
  clientCpuS: number;
  serverCpuS: number;
}

async function main(): Promise<void> {
  const server = await spawnServer({ config: CONFIG, pin: false });
  const serverCpu = async () => {
    const s = await server.stats();
    return (s.cpuUserUs + s.cpuSystemUs) / 1e6;
  };
  const clientCpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  /** Runs `loop` on `callers` callers; measures after the warm-up for `seconds`. */
  async function span(
    mode: string,
    loop: (stop: () => boolean, count: Counts) => Promise<void>,
  ): Promise<Span> {
    let running = true;
    const counts: Counts = { admitted: 0, timeouts: 0 };
    const callers = Array.from({ length: args.callers }, () => loop(() => !running, counts));
    await sleep(args.warmup * 1000);
    const c0 = clientCpu();
    const s0 = await serverCpu();
    const a0 = counts.admitted;
    const t0 = counts.timeouts;
    await sleep(args.seconds * 1000);
    const c1 = clientCpu();
    const s1 = await serverCpu();
    const out = {
      mode,
      admittedPerS: (counts.admitted - a0) / args.seconds,
      timeouts: counts.timeouts - t0,
      clientCpuS: c1 - c0,
      serverCpuS: s1 - s0,
    };
    running = false;
    await Promise.all(callers);
    return out;
  }

  const results: Span[] = [];
  const limiter = await createLimiter({ servers: [server.address], clientId: "wait-cpu" });
  results.push(await span("idle (gateway started, no callers)", async () => {}));
  results.push(
    await span("gateway wait(), timeout 500 ms", async (stop, n) => {
      while (!stop()) {
        if (await limiter.wait("w/k=gw", 1, { timeoutMs: 500 })) {
          n.admitted++;
          await sleep(args.workMs);
        } else n.timeouts++;
      }
    }),
  );
  limiter.close();
  const rpc = connect(server.address);
  results.push(
    await span("server Check max_wait_ms 500", async (stop, n) => {
      while (!stop()) {
        const r = await rpc.check({ items: [{ key: "w/k=sync", cost: 1, maxWaitMs: 500 }] });
        if (r.results[0]?.allowed) {
          n.admitted++;
          await sleep(args.workMs);
        } else n.timeouts++;
      }
    }),
  );
  // The same calls without waiting, paced by the callers at the limit: what the calls themselves cost.
  results.push(
    await span("server Check, no wait, each caller 2/s", async (stop, n) => {
      while (!stop()) {
        const r = await rpc.check({ items: [{ key: "w/k=paced", cost: 1 }] });
        if (r.results[0]?.allowed) n.admitted++;
        else n.timeouts++;
        await sleep(500);
      }
    }),
  );
  rpc.close();
  await server.stop();
  printTable(
    ["mode", "admitted/s", "timeouts", "caller CPU s", "server CPU s", "CPU ms per admitted (both)"],
    results.map((r) => [
      r.mode,
      num(r.admittedPerS, 1),
      r.timeouts,
      num(r.clientCpuS, 3),
      num(r.serverCpuS, 3),
      r.admittedPerS > 0
        ? num(((r.clientCpuS + r.serverCpuS) * 1000) / (r.admittedPerS * args.seconds), 3)
        : "-",
    ]),
  );
  console.log(`\n${args.callers} callers, measured ${args.seconds} s after ${args.warmup} s of warm-up`);
  writeResult("wait-cpu", { args, results });
}

interface Counts {
  admitted: number;
  timeouts: number;
}

await main();
