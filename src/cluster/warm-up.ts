import { pino } from "pino";
import { ManualClock } from "../core/clock.js";
import { Engine } from "../core/engine.js";
import { limitDefaults } from "../core/limit.js";
import { keyPoint } from "../keyspace/hash.js";
import type { HandoffRequest } from "../protocol/messages.js";
import { PEER_SERVICE, serviceDefinition } from "../protocol/proto.js";
import { ClusterOwnership } from "./cluster-ownership.js";
import { Handoff } from "./handoff.js";

/** Synthetic counters per algorithm per round, and rounds: 3,000 counters through the path each. */
const COUNTERS = 1000;
const ROUNDS = 3;
const T0 = 1_700_000_000_000;

/**
 * Runs the handoff path once, at start, over synthetic counters: take them out of an engine by
 * ranges, cut and size them into chunks, encode each `Handoff` request as grpc-js would, decode it
 * as the receiver's deserializer does, and put the counters into another engine.
 *
 * Why: a process's first handoff otherwise runs cold code on both sides (protobufjs generates the
 * `CounterState` encoder and decoder on first use, and V8 runs the snapshot, sizing and put code
 * unoptimised until it has seen enough calls), 10-40x slower per counter than warm: at millions of
 * counters the first chunks of the first rebalance held the event loop for 40-60 ms of CPU each
 * (bench/RESULTS.md §8b). Here that cost is paid before the server is ready, in ~0.1-0.3 s,
 * yielding between chunks like a real handoff.
 */
export async function warmUpHandoff(): Promise<{ counters: number; ms: number }> {
  const started = performance.now();
  const def = serviceDefinition(PEER_SERVICE).Handoff!;
  const limits = [
    limitDefaults({ algorithm: "token_bucket", limit: 1000, windowMs: 60_000 }),
    limitDefaults({ algorithm: "fixed_window", limit: 1000, windowMs: 60_000 }),
    limitDefaults({ algorithm: "sliding_window", limit: 1000, windowMs: 60_000 }),
  ];
  const clock = new ManualClock(T0 + 1);
  const receiver = new Engine({ pointOf: keyPoint });
  let moved = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const sender = new Engine({ pointOf: keyPoint });
    // Half used, so each counter is worth a snapshot (an untouched one is not sent).
    for (const [a, l] of limits.entries()) {
      for (let i = 0; i < COUNTERS; i++) sender.check(`warm-up/${a}/${round}/${i}`, l, 500, T0);
    }
    const handoff = new Handoff({
      selfId: "warm-up",
      store: sender,
      ownership: new ClusterOwnership({ selfId: "warm-up", clock, handoffTimeoutMs: 1000 }),
      peer: () => ({
        handoff: async (req: Partial<HandoffRequest>) => {
          const got = def.requestDeserialize(def.requestSerialize(req)) as HandoffRequest;
          moved += receiver.putCounters(got.counters, T0 + 2);
          return { accepted: got.counters.length, generation: 2 };
        },
      }),
      clock,
      log: pino({ level: "silent" }),
    });
    await handoff.send({
      generation: 2,
      lost: [
        {
          start: 0,
          end: 2 ** 32,
          from: { id: "warm-up", address: "warm-up:1" },
          to: { id: "peer", address: "peer:1" },
        },
      ],
      gained: [],
      pending: [],
      orphaned: [],
    });
  }
  return { counters: moved, ms: performance.now() - started };
}
