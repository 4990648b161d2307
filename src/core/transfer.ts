import { ALGORITHMS, type Algorithm } from "./algorithms/names.js";
import { ClientTable } from "./clients.js";
import { LeaseTable } from "./concurrency.js";
import { Counter } from "./counter.js";

/**
 * A counter as one server hands it to another. Times are relative to the sender's `now`, so the
 * two clocks need not agree; the receiver re-bases them on its own.
 */
export interface CounterSnapshot {
  key: string;
  shard: string;
  algorithm: string;
  tRelMs: number;
  x: number;
  y: number;
  expiresInMs: number;
  /** `taker`: the identity that took the lease ("" or absent: none recorded). */
  leases: { id: string; amount: number; expiresInMs: number; taker?: string }[];
  clients: { id: string; demand: number; held: number; seenMsAgo: number }[];
}

export function snapshotCounter(key: string, c: Counter, now: number): CounterSnapshot {
  const leases: CounterSnapshot["leases"] = [];
  c.leases?.forEach((id, amount, expiresAt, taker) => {
    if (expiresAt > now)
      leases.push(
        taker === undefined
          ? { id, amount, expiresInMs: expiresAt - now }
          : { id, amount, expiresInMs: expiresAt - now, taker },
      );
  });
  const clients: CounterSnapshot["clients"] = [];
  c.clients?.forEach((id, s) => {
    clients.push({ id, demand: s.demand, held: s.held, seenMsAgo: Math.max(0, now - s.lastSeen) });
  });
  return {
    key,
    shard: c.shard,
    algorithm: c.algorithm,
    tRelMs: c.t - now,
    x: c.x,
    y: c.y,
    expiresInMs: c.expiresAt - now,
    leases,
    clients,
  };
}

/**
 * `s` as it reads `ms` later: its times are relative to the moment it was taken, so a snapshot
 * sent again after a wait (a handoff retried while its receiver was unreachable) must age, or the
 * receiver would place its window that much later (a count of a past window landing in the
 * current one).
 */
export function agedSnapshot(s: CounterSnapshot, ms: number): CounterSnapshot {
  if (!(ms > 0)) return s;
  return {
    ...s,
    tRelMs: s.tRelMs - ms,
    expiresInMs: s.expiresInMs - ms,
    leases: s.leases.map((l) => ({ ...l, expiresInMs: l.expiresInMs - ms })),
    clients: s.clients.map((c) => ({ ...c, seenMsAgo: c.seenMsAgo + ms })),
  };
}

/** Why a snapshot cannot be restored, or undefined when it can. */
export function snapshotProblem(s: CounterSnapshot): string | undefined {
  if (s.key === "") return "counter key is empty";
  if (!(ALGORITHMS as readonly string[]).includes(s.algorithm)) return `unknown algorithm ${s.algorithm}`;
  for (const v of [s.tRelMs, s.x, s.y, s.expiresInMs])
    if (!Number.isFinite(v)) return "a number is not finite";
  for (const l of s.leases) if (!(l.amount >= 0) || !Number.isFinite(l.expiresInMs)) return "bad lease";
  for (const c of s.clients) if (!(c.demand >= 0) || !(c.held >= 0)) return "bad client";
  return undefined;
}

/**
 * The counter a snapshot describes, on the receiver's clock. Its gateways come along as known
 * clients with their demand, and the counter is marked whole (`complete`), so the window-to-date
 * totals gateways re-send after the generation change are not counted twice.
 */
export function restoreCounter(s: CounterSnapshot, now: number): Counter {
  const c = new Counter(s.algorithm as Algorithm, s.shard || s.key);
  c.t = now + s.tRelMs;
  c.x = s.x;
  c.y = s.y;
  c.expiresAt = now + s.expiresInMs;
  c.complete = true;
  if (c.algorithm === "concurrency") {
    c.leases = new LeaseTable();
    for (const l of s.leases) c.leases.add(l.id, l.amount, now + l.expiresInMs, l.taker || undefined);
  }
  if (s.clients.length > 0) {
    const table = new ClientTable();
    for (const cl of s.clients) {
      const share = table.upsert(cl.id, now - cl.seenMsAgo);
      table.observe(share, cl.demand, 1); // first observation: taken as is
      table.setHeld(share, cl.held);
    }
    c.clients = table;
  }
  return c;
}

/**
 * Two states of one key, as when a late handoff meets a counter the receiver started on its own:
 * keep the one that has less left (more used, more held), so the pair never admits more than
 * either would alone.
 */
export function fuller(a: Counter, b: Counter): Counter {
  if (a.algorithm !== b.algorithm) return b;
  if (a.algorithm === "token_bucket") return a.x <= b.x ? a : b;
  if (a.algorithm === "concurrency") return (a.leases?.held ?? 0) >= (b.leases?.held ?? 0) ? a : b;
  if (a.t !== b.t) return a.t > b.t ? a : b;
  return a.x + a.y >= b.x + b.y ? a : b;
}
