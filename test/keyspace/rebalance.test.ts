import { describe, expect, it } from "vitest";
import { type LoadRecord, sliceLoads } from "../../src/cluster/load.js";
import { Assignment, type Member, movedFraction } from "../../src/keyspace/assignment.js";
import { simulateBalance } from "../../src/keyspace/balance-sim.js";
import { evenStarts, place } from "../../src/keyspace/placement.js";
import { DEFAULT_REBALANCE, rebalance } from "../../src/keyspace/rebalance.js";

const members = (n: number): Member[] =>
  Array.from({ length: n }, (_, i) => ({ id: `m${i}`, address: `a${i}:1` }));

describe("load balancing with the real assigner code", () => {
  it("Zipf 0.9 over 20 servers: at most 1.10 max/mean after rebalancing, churn within the budget", () => {
    const r = simulateBalance({ servers: 20, keys: 200_000, zipf: 0.9, rounds: 3 });
    expect(r.rounds[0]!.imbalance).toBeGreaterThan(1.2); // consistent hashing alone is uneven
    expect(r.rounds.at(-1)!.imbalance).toBeLessThanOrEqual(1.1);
    for (const x of r.rounds) expect(x.churn).toBeLessThanOrEqual(DEFAULT_REBALANCE.churnBudget + 1e-9);
    // A join and a leave each move about 1/N, and rebalancing restores the balance.
    expect(r.join.churn).toBeLessThan(2 / 21);
    expect(r.leave.churn).toBeLessThan(2 / 20);
    expect(r.join.imbalanceAfterRebalance).toBeLessThanOrEqual(1.1);
    expect(r.leave.imbalanceAfterRebalance).toBeLessThanOrEqual(1.1);
  });

  it("when one key outweighs a server's share, it reaches that floor and no further", () => {
    const r = simulateBalance({ servers: 20, keys: 100_000, zipf: 1.1, rounds: 4 });
    expect(r.floor).toBeGreaterThan(1.5);
    expect(r.rounds.at(-1)!.imbalance).toBeLessThanOrEqual(r.floor * 1.02);
  });

  it("moves nothing when balanced or when the churn budget is zero", () => {
    const a = place(1, members(4), evenStarts(64));
    const even = new Assignment(
      1,
      members(4),
      evenStarts(64),
      Uint16Array.from({ length: 64 }, (_, i) => i % 4),
    );
    const balanced = rebalance(
      even,
      Float64Array.from({ length: 64 }, () => 1),
      2,
    );
    expect(balanced).toMatchObject({ moves: 0, splits: 0, merges: 0, churn: 0, imbalanceBefore: 1 });
    expect(movedFraction(even, balanced.assignment)).toBe(0);
    const loads = Float64Array.from({ length: 64 }, (_, i) => (a.owners[i] === 0 ? 5 : 1));
    expect(rebalance(a, loads, 2, { ...DEFAULT_REBALANCE, churnBudget: 0 }).moves).toBe(0);
    const r = rebalance(a, loads, 2);
    expect(r.moves).toBeGreaterThan(0);
    expect(r.imbalanceAfter).toBeLessThan(r.imbalanceBefore);
    expect(movedFraction(a, r.assignment)).toBeCloseTo(r.churn, 9);
    expect(r.assignment.previous?.generation).toBe(1);
  });

  it("splits a hot slice without moving its keys, and merges cold neighbours of one owner", () => {
    const ms = members(2);
    const a = new Assignment(
      1,
      ms,
      evenStarts(32),
      Uint16Array.from({ length: 32 }, (_, i) => (i < 16 ? 0 : 1)),
    );
    const loads = Float64Array.from({ length: 32 }, (_, i) => (i === 3 ? 100 : 0.0001));
    const r = rebalance(a, loads, 2, { ...DEFAULT_REBALANCE, minSlicesPerMember: 2 });
    expect(r.splits).toBeGreaterThan(0);
    expect(r.merges).toBeGreaterThan(0);
    // Every point keeps its owner unless a move said otherwise.
    const moved = movedFraction(a, r.assignment);
    expect(moved).toBeCloseTo(r.churn, 9);
  });

  it("spreads measured ranges over the current slices by overlap", () => {
    const a = new Assignment(1, members(1), Uint32Array.of(0, 1000, 3000), Uint16Array.of(0, 0, 0));
    const rec: LoadRecord = { id: "m0", generation: 1, at: 0, ranges: [[500, 2500, 200]] };
    expect(Array.from(sliceLoads(a, [rec]))).toEqual([50, 150, 0]);
  });
});
