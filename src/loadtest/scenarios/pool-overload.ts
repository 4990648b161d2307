import { PRIORITIES } from "../../core/priority.js";
import { type CheckItemMsg, PriorityMsg } from "../../protocol/messages.js";
import { connect } from "../../protocol/rpc.js";
import { BackendLoad } from "../../sim/pool.js";
import { serverProcess, writeConfig } from "../../testkit/serve.js";
import { round } from "./common.js";

/**
 * `shardlimit bench overload`, scenario `pool` (issue 14, item 2) with a real server process: a
 * pool of 10 backends, 1000 units/s in all, target 0.8, offered 2000/s of Check items in four
 * classes (500/s each) over loopback. The bench process plays the backends: each admitted item is
 * work for one of them, and each reports its utilisation (the work of the last 200 ms seen 50 ms
 * late, smoothed, clamped to [0, 1]) every 100 ms with ReportPool, so the controller in the server
 * closes its loop over real gRPC calls in wall-clock time.
 */

export interface PoolOverloadResult {
  name: string;
  target: number;
  capacity_per_s: number;
  offered_per_s: number;
  seconds: number;
  /** Admitted over capacity, per second of the run. */
  utilisation_per_s: number[];
  /** Worst |utilisation / target - 1| over 2 s windows from 2 s on. */
  worst_deviation_2s: number;
  /** Admitted share of each class's demand from 2 s on, low first. */
  admitted_share: number[];
  pass: boolean;
  /** The pool as its owner answered the last report. */
  final: { mode?: string; level?: number; fractions?: number[]; utilisation?: number };
  check_calls: number;
  check_errors: number;
  report_errors: number;
}

const CONFIG = `domain: bench
pools:
  p: { target: 0.8, idle_below: 0.6 }
descriptors:
  - key: svc
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000000, pool: p }
`;

const BACKENDS = 10;
const CAPACITY = 1000;
const PER_CLASS = 500;
const REPORT_MS = 100;
const TICK_MS = 10;
const CLASS_MSG = [PriorityMsg.LOW, PriorityMsg.NORMAL, PriorityMsg.HIGH, PriorityMsg.CRITICAL];

export async function runPoolOverload(opts: {
  seconds: number;
  log: (l: string) => void;
}): Promise<PoolOverloadResult> {
  // Info: the harness waits for the server's "serving" line.
  const server = await serverProcess({ id: "pool-bench", configPath: writeConfig(CONFIG) });
  try {
    await server.start();
  } catch (err) {
    await server.stop();
    throw err;
  }
  const rpc = connect(server.address);
  const seconds = opts.seconds;
  // The simulation's load model, on the wall clock.
  const load = new BackendLoad(
    {
      backends: BACKENDS,
      capacityPerS: CAPACITY,
      reportMs: REPORT_MS,
      windowMs: 200,
      delayMs: 50,
      tauMs: 100,
    },
    seconds,
  );
  const offered = PRIORITIES.map(() => new Array<number>(seconds).fill(0));
  const admitted = PRIORITIES.map(() => new Array<number>(seconds).fill(0));
  const sent = PRIORITIES.map(() => 0);
  let checkCalls = 0;
  let checkErrors = 0;
  let reportErrors = 0;
  let final: PoolOverloadResult["final"] = {};
  const start = Date.now();
  const elapsed = () => Date.now() - start;

  const report = () => {
    const now = elapsed();
    for (let b = 0; b < BACKENDS; b++) {
      const utilisation = load.read(b, now);
      rpc
        .reportPool(
          { pool: "p", backend: `b${b}`, utilisation, capacity: load.capacity },
          { deadlineMs: 1000 },
        )
        .then((res) => {
          if (res.error?.code) reportErrors++;
          else
            final = {
              mode: res.mode,
              level: res.level,
              fractions: res.fractions,
              utilisation: res.utilisation,
            };
        })
        .catch(() => reportErrors++);
    }
  };

  const tick = () => {
    const now = elapsed();
    const second = Math.floor(now / 1000);
    if (second >= seconds) return;
    const items: CheckItemMsg[] = [];
    const classes: number[] = [];
    for (let c = 0; c < PRIORITIES.length; c++) {
      const due = Math.floor((PER_CLASS * now) / 1000) - sent[c]!;
      for (let i = 0; i < due; i++) {
        items.push({ key: "bench/svc=api", cost: 1, priority: CLASS_MSG[c]! });
        classes.push(c);
      }
      sent[c]! += Math.max(0, due);
      offered[c]![second]! += Math.max(0, due);
    }
    if (items.length === 0) return;
    checkCalls++;
    rpc
      .check({ items, atomic: false, generation: 0 }, { deadlineMs: 2000 })
      .then((res) => {
        const at = elapsed();
        res.results.forEach((r, i) => {
          if (!r.allowed) return;
          admitted[classes[i]!]![second]!++;
          load.admit(1, at);
        });
      })
      .catch(() => checkErrors++);
  };

  opts.log(`bench overload pool: ${seconds} s, ${PER_CLASS * 4}/s offered to a pool of ${CAPACITY}/s`);
  const reporter = setInterval(report, REPORT_MS);
  const loader = setInterval(tick, TICK_MS);
  try {
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000 + 300));
  } finally {
    clearInterval(reporter);
    clearInterval(loader);
    rpc.close();
    await server.stop();
  }
  const total = (s: number) => admitted.reduce((a, xs) => a + xs[s]!, 0);
  const utilisation = Array.from({ length: seconds }, (_, s) => round(total(s) / CAPACITY, 4));
  let worst = 0;
  for (let s = 2; s + 2 <= seconds; s += 2) {
    worst = Math.max(worst, Math.abs((total(s) + total(s + 1)) / 2 / CAPACITY / 0.8 - 1));
  }
  const sum = (xs: number[]) => xs.slice(2).reduce((a, b) => a + b, 0);
  const share = PRIORITIES.map((_, c) => round(sum(admitted[c]!) / Math.max(1, sum(offered[c]!)), 4));
  const ordered = share.every((s, i) => i === 0 || s >= share[i - 1]! - 0.01);
  return {
    name: "pool: 2000/s in four classes to a pool of 1000/s, target 0.8 (one real server, 10 backends over gRPC)",
    target: 0.8,
    capacity_per_s: CAPACITY,
    offered_per_s: PER_CLASS * 4,
    seconds,
    utilisation_per_s: utilisation,
    worst_deviation_2s: round(worst, 4),
    admitted_share: share,
    pass: worst <= 0.05 && share[3]! >= 0.99 && ordered && checkErrors === 0,
    final,
    check_calls: checkCalls,
    check_errors: checkErrors,
    report_errors: reportErrors,
  };
}
