import { Assignment } from "./assignment.js";
import { withoutPrevious } from "./placement.js";

export interface RebalanceOptions {
  /**
   * Most of the key space that may change owner in one round, as a fraction of it (Slicer caps
   * movement at 9% per round). Hot slices are split first, so moving much load costs little key
   * space.
   */
  churnBudget: number;
  /** Moves stop once the most loaded member is at most this times the mean. */
  targetImbalance: number;
  /** A slice carrying more than this fraction of the mean member load is split in two. */
  splitAbove: number;
  /** How many times one slice may be halved in a round (its load inside is unknown until measured). */
  maxSplitsPerSlice: number;
  /**
   * Slices are not split below this many points (of 2^32): about one key per slice at a million
   * keys. A slice that hot holds a hot key, which no split can divide.
   */
  minSplitWidth: number;
  /** Adjacent slices of one owner whose load together is below this fraction of the mean are merged. */
  mergeBelow: number;
  /** The table never grows past this many slices, nor shrinks below `minSlicesPerMember` each. */
  maxSlices: number;
  minSlicesPerMember: number;
}

export const DEFAULT_REBALANCE: RebalanceOptions = {
  churnBudget: 0.09,
  targetImbalance: 1.05,
  splitAbove: 0.1,
  maxSplitsPerSlice: 4,
  minSplitWidth: 4096,
  mergeBelow: 0.002,
  maxSlices: 65_536,
  minSlicesPerMember: 16,
};

export interface RebalanceResult {
  assignment: Assignment;
  /** Fraction of the key space whose owner changed. */
  churn: number;
  splits: number;
  merges: number;
  moves: number;
  /** Max over mean member load before, and after (exact: split slices move whole). */
  imbalanceBefore: number;
  imbalanceAfter: number;
}

/** Max over mean of the members' loads (active members only). */
export function imbalance(memberLoad: readonly number[], active: readonly boolean[]): number {
  let max = 0;
  let sum = 0;
  let n = 0;
  for (let j = 0; j < memberLoad.length; j++) {
    if (!active[j]) continue;
    max = Math.max(max, memberLoad[j]!);
    sum += memberLoad[j]!;
    n++;
  }
  return sum > 0 ? max / (sum / n) : 1;
}

/**
 * One round of load balancing over measured per-slice load (`load[i]` for slice i of `a`, in any
 * unit): merge cold neighbours of one owner, move slices from the most to the least loaded member
 * while that narrows their gap, within the churn budget, and split hot slices so the next round
 * can place their load more finely. Slicer's and Dicer's approach; ownership of keys changes only
 * by the moves, so splits and merges are free.
 */
export function rebalance(
  a: Assignment,
  load: ArrayLike<number>,
  generation: number,
  opts: RebalanceOptions = DEFAULT_REBALANCE,
  writtenAt?: number,
): RebalanceResult {
  if (load.length !== a.slices)
    throw new RangeError(`load has ${load.length} entries for ${a.slices} slices`);
  const m = a.members.length;
  const active = a.members.map((x) => !x.draining);
  const nActive = active.filter(Boolean).length || m;
  let starts: number[] = Array.from(a.starts);
  let owners: number[] = Array.from(a.owners);
  let loads: number[] = Array.from(load, (v) => (Number.isFinite(v) && v > 0 ? v : 0));
  const width = (i: number) => (i + 1 < starts.length ? starts[i + 1]! : 2 ** 32) - starts[i]!;
  const total = loads.reduce((s, v) => s + v, 0);
  const memberLoad = new Array<number>(m).fill(0);
  for (let i = 0; i < owners.length; i++) memberLoad[owners[i]!]! += loads[i]!;
  const before = imbalance(memberLoad, active);
  const unchanged = (): RebalanceResult => ({
    assignment: a,
    churn: 0,
    splits: 0,
    merges: 0,
    moves: 0,
    imbalanceBefore: before,
    imbalanceAfter: before,
  });
  if (total === 0) return unchanged();
  const mean = total / nActive;

  // Merge: cold neighbours of one owner become one slice, keeping the table small.
  let merges = 0;
  {
    const minSlices = opts.minSlicesPerMember * nActive;
    const ns: number[] = [starts[0]!];
    const no: number[] = [owners[0]!];
    const nl: number[] = [loads[0]!];
    let count = starts.length;
    for (let i = 1; i < starts.length; i++) {
      const last = nl.length - 1;
      if (count > minSlices && no[last] === owners[i] && nl[last]! + loads[i]! < opts.mergeBelow * mean) {
        nl[last]! += loads[i]!;
        count--;
        merges++;
      } else {
        ns.push(starts[i]!);
        no.push(owners[i]!);
        nl.push(loads[i]!);
      }
    }
    starts = ns;
    owners = no;
    loads = nl;
  }

  // Moves work on these measured slices ("units"), whose loads are known exactly. A unit split
  // below moves whole: how its load falls among its parts is known only from the next round's
  // measurement, when each part is a unit of its own.
  const unitStart = starts;
  const unitLoad = loads;
  const unitOwner = owners;
  const unitWidth = unitStart.map((_, i) => width(i));

  // Split: a slice hotter than a fraction of a member's fair share cannot be placed finely.
  let splits = 0;
  const parts: number[] = [];
  {
    let budget = opts.maxSlices - unitStart.length;
    for (let u = 0; u < unitStart.length; u++) {
      let n = 1;
      while (
        n < 2 ** opts.maxSplitsPerSlice &&
        unitLoad[u]! / n > opts.splitAbove * mean &&
        unitWidth[u]! / (n * 2) >= Math.max(1, opts.minSplitWidth) &&
        budget >= n
      ) {
        budget -= n;
        n *= 2;
      }
      parts.push(n);
      splits += n - 1;
    }
  }

  // Move: the hottest member gives the unit that best halves its gap to the coolest one.
  let moves = 0;
  let churn = 0;
  const budget = opts.churnBudget * 2 ** 32;
  const byOwner: Set<number>[] = Array.from({ length: m }, () => new Set());
  for (let u = 0; u < unitOwner.length; u++) byOwner[unitOwner[u]!]!.add(u);
  const blocked = new Set<number>();
  for (let guard = 0; guard < unitStart.length * 2; guard++) {
    let hot = -1;
    let cold = -1;
    for (let j = 0; j < m; j++) {
      if (active[j] && !blocked.has(j) && (hot < 0 || memberLoad[j]! > memberLoad[hot]!)) hot = j;
      if (active[j] && (cold < 0 || memberLoad[j]! < memberLoad[cold]!)) cold = j;
    }
    if (hot < 0 || cold < 0 || hot === cold) break;
    if (memberLoad[hot]! <= opts.targetImbalance * mean) break;
    const gap = memberLoad[hot]! - memberLoad[cold]!;
    let best = -1;
    let bestScore = 0;
    for (const u of byOwner[hot]!) {
      const l = unitLoad[u]!;
      if (l <= 0 || l >= gap || churn + unitWidth[u]! > budget) continue;
      // The larger of the two afterwards is max(hot - l, cold + l): smallest when l is gap/2.
      const score = gap - Math.max(gap - l, l);
      if (score > bestScore) {
        bestScore = score;
        best = u;
      }
    }
    if (best < 0) {
      blocked.add(hot); // nothing of its can narrow a gap within the budget; try the next hottest
      continue;
    }
    byOwner[hot]!.delete(best);
    byOwner[cold]!.add(best);
    unitOwner[best] = cold;
    memberLoad[hot]! -= unitLoad[best]!;
    memberLoad[cold]! += unitLoad[best]!;
    churn += unitWidth[best]!;
    moves++;
  }

  // The new table: every unit's parts, with the unit's (possibly new) owner.
  const outStarts: number[] = [];
  const outOwners: number[] = [];
  for (let u = 0; u < unitStart.length; u++) {
    const n = parts[u]!;
    for (let k = 0; k < n; k++) {
      outStarts.push(unitStart[u]! + Math.floor((k * unitWidth[u]!) / n));
      outOwners.push(unitOwner[u]!);
    }
  }

  const next = new Assignment(
    generation,
    a.members,
    Uint32Array.from(outStarts),
    Uint16Array.from(outOwners),
    withoutPrevious(a),
    writtenAt,
  );
  return {
    assignment: next,
    churn: churn / 2 ** 32,
    splits,
    merges,
    moves,
    imbalanceBefore: before,
    imbalanceAfter: imbalance(memberLoad, active),
  };
}
