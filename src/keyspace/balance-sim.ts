import { seededRandom } from "../core/random.js";
import { type Assignment, type Member, movedFraction } from "./assignment.js";
import { keyPoint } from "./hash.js";
import { initialAssignment, place } from "./placement.js";
import { DEFAULT_REBALANCE, imbalance, type RebalanceOptions, rebalance } from "./rebalance.js";

/**
 * A deterministic simulation of load balancing with the real placement and rebalancing code: N
 * members, K keys whose load is Zipf-distributed, a number of rebalancing rounds each fed the
 * exact per-slice load, then a member joining and one leaving. What `shardlimit bench balance`
 * and the tests run.
 */

export interface BalanceSimOptions {
  servers: number;
  keys: number;
  /** Zipf exponent of per-key load (key of rank r carries 1/r^s). */
  zipf: number;
  rounds: number;
  seed?: number;
  rebalance?: RebalanceOptions;
}

export interface BalanceRound {
  round: number;
  /** Max over mean member load, measured with the exact key loads. */
  imbalance: number;
  /** Fraction of the key space that changed owner this round. */
  churn: number;
  slices: number;
  moves: number;
  splits: number;
  merges: number;
}

export interface BalanceSimResult {
  servers: number;
  keys: number;
  zipf: number;
  /** The hottest key's load over the mean member load: no placement can do better than this. */
  hottestKeyOverMean: number;
  /** The best possible imbalance: max(1, hottest key over mean). */
  floor: number;
  rounds: BalanceRound[];
  /** After the rounds: a member joins, rebalancing runs twice, then a member leaves. */
  join: { churn: number; imbalanceAfterJoin: number; imbalanceAfterRebalance: number };
  leave: { churn: number; imbalanceAfterLeave: number; imbalanceAfterRebalance: number };
  ms: number;
}

/** Keys sorted by point, with prefix sums of load, so a slice's load is two binary searches. */
class KeyLoads {
  readonly points: Float64Array;
  readonly prefix: Float64Array;
  readonly total: number;
  readonly max: number;

  constructor(n: number, zipf: number, seed: number) {
    const rnd = seededRandom(seed);
    const salt = Math.floor(rnd() * 1e9);
    const pairs = new Array<[number, number]>(n);
    let max = 0;
    for (let i = 0; i < n; i++) {
      const w = 1 / (i + 1) ** zipf;
      max = Math.max(max, w);
      pairs[i] = [keyPoint(`tenant-${salt}-${i}`), w];
    }
    pairs.sort((a, b) => a[0] - b[0]);
    this.points = Float64Array.from(pairs, (p) => p[0]);
    this.prefix = new Float64Array(n + 1);
    for (let i = 0; i < n; i++) this.prefix[i + 1] = this.prefix[i]! + pairs[i]![1];
    this.total = this.prefix[n]!;
    this.max = max;
  }

  /** Index of the first key with point >= p. */
  private lower(p: number): number {
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < p) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  sliceLoads(a: Assignment): Float64Array {
    const out = new Float64Array(a.slices);
    for (let i = 0; i < a.slices; i++) {
      const end = i + 1 < a.slices ? a.starts[i + 1]! : 2 ** 32;
      out[i] = this.prefix[this.lower(end)]! - this.prefix[this.lower(a.starts[i]!)]!;
    }
    return out;
  }

  imbalance(a: Assignment): number {
    const loads = this.sliceLoads(a);
    const memberLoad = new Array<number>(a.members.length).fill(0);
    for (let i = 0; i < a.slices; i++) memberLoad[a.owners[i]!]! += loads[i]!;
    return imbalance(
      memberLoad,
      a.members.map((m) => !m.draining),
    );
  }
}

export function simulateBalance(o: BalanceSimOptions): BalanceSimResult {
  const t0 = performance.now();
  const opts = o.rebalance ?? DEFAULT_REBALANCE;
  const keys = new KeyLoads(o.keys, o.zipf, o.seed ?? 1);
  const members: Member[] = Array.from({ length: o.servers }, (_, i) => ({
    id: `m${String(i).padStart(3, "0")}`,
    address: `10.0.0.${i}:8081`,
  }));
  let a = initialAssignment(1, members);
  const rounds: BalanceRound[] = [
    { round: 0, imbalance: keys.imbalance(a), churn: 0, slices: a.slices, moves: 0, splits: 0, merges: 0 },
  ];
  const round = (n: number) => {
    const r = rebalance(a, keys.sliceLoads(a), a.generation + 1, opts);
    a = r.assignment;
    return {
      round: n,
      imbalance: keys.imbalance(a),
      churn: r.churn,
      slices: a.slices,
      moves: r.moves,
      splits: r.splits,
      merges: r.merges,
    };
  };
  for (let n = 1; n <= o.rounds; n++) rounds.push(round(n));

  const joined = [...members, { id: "m-new", address: "10.0.1.1:8081" }];
  const beforeJoin = a;
  a = place(a.generation + 1, joined, a.starts, a);
  const join = {
    churn: movedFraction(beforeJoin, a),
    imbalanceAfterJoin: keys.imbalance(a),
    imbalanceAfterRebalance: 0,
  };
  round(0);
  round(0);
  join.imbalanceAfterRebalance = keys.imbalance(a);

  const beforeLeave = a;
  a = place(a.generation + 1, joined.slice(1), a.starts, a);
  const leave = {
    churn: movedFraction(beforeLeave, a),
    imbalanceAfterLeave: keys.imbalance(a),
    imbalanceAfterRebalance: 0,
  };
  round(0);
  round(0);
  leave.imbalanceAfterRebalance = keys.imbalance(a);

  const hottestKeyOverMean = keys.max / (keys.total / o.servers);
  return {
    servers: o.servers,
    keys: o.keys,
    zipf: o.zipf,
    hottestKeyOverMean,
    floor: Math.max(1, hottestKeyOverMean),
    rounds,
    join,
    leave,
    ms: performance.now() - t0,
  };
}
