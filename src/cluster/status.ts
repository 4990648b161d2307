import type { Etcd3 } from "etcd3";
import type { Assignment } from "../keyspace/assignment.js";
import { decodeAssignment } from "../keyspace/assignment-codec.js";
import { assignmentKey } from "./assignment-view.js";
import { type GlobalStatus, type LoadRecord, LoadRecordSchema, loadPrefix, type PoolStatus } from "./load.js";
import { type MemberRecord, membersPrefix, parseMembers } from "./membership.js";

export interface MemberStatus {
  id: string;
  address: string;
  draining: boolean;
  /** In the assignment, not (or no longer) registered. */
  registered: boolean;
  slices: number;
  /** Share of the key space owned. */
  keyspace: number;
  /** Decisions per second last published (undefined when none). */
  load: number | undefined;
  /** The limits it serves (version 0: from files) and a pushed version it refused, as it published them. */
  limits?: MemberRecord["limits"];
}

export interface ClusterStatus {
  prefix: string;
  generation: number;
  slices: number;
  leader: string | undefined;
  members: MemberStatus[];
  /** Max over mean published load of the members that own slices. */
  imbalance: number | undefined;
  assignmentProblem: string | undefined;
  /** Pools of backends (issue 14), as the members owning their keys last published them. */
  pools: (PoolStatus & { owner: string })[];
  /** With --global-tier (issue 14): each member's link and the global keys it divides. */
  global?: (GlobalStatus & { owner: string })[];
}

const noLog = { debug() {}, info() {}, warn() {}, error() {} };

/** Reads members, assignment, leader and load from etcd in one consistent range read. */
export async function readStatus(client: Etcd3, prefix: string): Promise<ClusterStatus> {
  const res = await client.getAll().prefix(prefix).exec();
  const kv = new Map(res.kvs.map((x) => [x.key.toString(), x.value.toString()]));
  const under = (p: string) =>
    new Map([...kv].filter(([k]) => k.startsWith(p)).map(([k, v]) => [k.slice(p.length), v]));
  const members: MemberRecord[] = parseMembers(under(membersPrefix(prefix)), noLog);
  const loads = new Map<string, LoadRecord>();
  for (const [id, v] of under(loadPrefix(prefix))) {
    try {
      const r = LoadRecordSchema.safeParse(JSON.parse(v));
      if (r.success) loads.set(id, r.data);
    } catch {
      // left out
    }
  }
  const text = kv.get(assignmentKey(prefix));
  const decoded = text === undefined ? undefined : decodeAssignment(text);
  const a: Assignment | undefined = typeof decoded === "object" ? decoded : undefined;
  const ids = new Set([...members.map((m) => m.id), ...(a?.members.map((m) => m.id) ?? [])]);
  const out: MemberStatus[] = [...ids].sort().map((id) => {
    const reg = members.find((m) => m.id === id);
    const idx = a ? a.members.findIndex((m) => m.id === id) : -1;
    let slices = 0;
    let keyspace = 0;
    if (a && idx >= 0) {
      for (let i = 0; i < a.slices; i++) {
        if (a.owners[i] === idx) {
          slices++;
          keyspace += a.width(i) / 2 ** 32;
        }
      }
    }
    const load = loads.get(id)?.ranges.reduce((s, r) => s + r[2], 0);
    return {
      id,
      address: reg?.address ?? a?.members[idx]?.address ?? "",
      draining: Boolean(reg?.draining ?? a?.members[idx]?.draining),
      registered: reg !== undefined,
      slices,
      keyspace,
      load,
      ...(reg?.limits ? { limits: reg.limits } : {}),
    };
  });
  const owning = out.filter((m) => m.slices > 0 && m.load !== undefined);
  const total = owning.reduce((s, m) => s + m.load!, 0);
  const imbalance =
    owning.length > 0 && total > 0
      ? Math.max(...owning.map((m) => m.load!)) / (total / owning.length)
      : undefined;
  return {
    prefix,
    generation: a?.generation ?? 0,
    slices: a?.slices ?? 0,
    leader: kv.get(`${prefix}assigner/leader`),
    members: out,
    imbalance,
    assignmentProblem:
      typeof decoded === "string" ? decoded : text === undefined ? "no assignment yet" : undefined,
    pools: poolsOf(loads),
    global: [...loads]
      .filter(([, r]) => r.global !== undefined)
      .map(([id, r]) => ({ ...r.global!, owner: id }))
      .sort((a, b) => a.owner.localeCompare(b.owner)),
  };
}

/** Global keys listed one by one, over all members: the most demanded. */
const GLOBAL_KEYS_SHOWN = 20;

/**
 * The global tier as the members see it: each one's link (with why it is refused or
 * unreachable), then the most demanded global keys with the region, its share, how old the last
 * share is and where the share comes from; the rest counted by mode.
 */
function formatGlobal(global: NonNullable<ClusterStatus["global"]>): string[] {
  if (global.length === 0) return [];
  const lines: string[] = [];
  for (const g of global) {
    lines.push(
      `global tier link of ${g.owner} (region ${g.region}): ${g.link}${g.linkError ? `: ${g.linkError}` : ""}`,
    );
  }
  const keys = global
    .flatMap((g) => g.keys.map((k) => ({ ...k, owner: g.owner, region: g.region })))
    .sort((a, b) => b.demandPerS - a.demandPerS || a.key.localeCompare(b.key));
  const shown = keys.slice(0, GLOBAL_KEYS_SHOWN);
  const rows = [
    ["global key", "owner", "region", "share/s", "last share/s", "demand/s", "last share age", "mode"],
  ];
  for (const k of shown) {
    rows.push([
      k.key,
      k.owner,
      k.region,
      k.sharePerS.toFixed(1),
      k.lastSharePerS.toFixed(1),
      k.demandPerS.toFixed(1),
      `${(k.lastContactAgoMs / 1000).toFixed(1)}s`,
      k.mode === "fallback" ? "fallback (limit / regions)" : k.mode,
    ]);
  }
  if (shown.length > 0) lines.push(...table(rows));
  const rest = keys.length - shown.length + global.reduce((n, g) => n + g.more, 0);
  const modes = { connected: 0, last_share: 0, fallback: 0 };
  for (const g of global)
    for (const m of Object.keys(modes) as (keyof typeof modes)[]) modes[m] += g.modes[m];
  const total = modes.connected + modes.last_share + modes.fallback;
  lines.push(
    `global keys: ${total} (connected ${modes.connected}, last share ${modes.last_share}, fallback ${modes.fallback})${rest > 0 ? `; ${rest} more not listed` : ""}`,
  );
  return lines;
}

/** Each pool once: from the freshest record that has it (an owner that moved may still list it). */
function poolsOf(loads: ReadonlyMap<string, LoadRecord>): (PoolStatus & { owner: string })[] {
  const best = new Map<string, { at: number; pool: PoolStatus & { owner: string } }>();
  for (const [id, r] of loads) {
    for (const p of r.pools ?? []) {
      const seen = best.get(p.name);
      if (seen === undefined || r.at > seen.at) best.set(p.name, { at: r.at, pool: { ...p, owner: id } });
    }
  }
  return [...best.values()].map((b) => b.pool).sort((a, b) => a.name.localeCompare(b.name));
}

/** The pools as a table: mode, utilisation against target, the controller's level, what is shed. */
function formatPools(pools: ClusterStatus["pools"]): string[] {
  if (pools.length === 0) return [];
  const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
  const rows = [
    [
      "pool",
      "owner",
      "mode",
      "utilisation",
      "target",
      "level",
      "shed low/normal/high/critical",
      "backends",
      "lent/s",
    ],
  ];
  for (const p of pools) {
    rows.push([
      p.name,
      p.owner,
      p.mode,
      pct(p.utilisation),
      pct(p.target),
      p.level.toFixed(2),
      p.fractions.map(pct).join("/"),
      String(p.backends),
      p.lending.toFixed(0),
    ]);
  }
  return table(rows);
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) =>
    r
      .map((cell, c) => cell.padEnd(widths[c]!))
      .join("  ")
      .trimEnd(),
  );
}

/** The status as a table for people. */
export function formatStatus(s: ClusterStatus): string {
  const lines = [
    `cluster ${s.prefix}  generation ${s.generation}  slices ${s.slices}  assigner leader ${s.leader ?? "(none)"}`,
  ];
  if (s.assignmentProblem) lines.push(`assignment: ${s.assignmentProblem}`);
  const rows = [["member", "address", "state", "slices", "key space", "load/s", "limits"]];
  for (const m of s.members) {
    rows.push([
      m.id,
      m.address,
      !m.registered ? "gone" : m.draining ? "draining" : "up",
      String(m.slices),
      `${(m.keyspace * 100).toFixed(1)}%`,
      m.load === undefined ? "-" : m.load.toFixed(0),
      limitsCell(m.limits),
    ]);
  }
  lines.push(...table(rows));
  if (s.imbalance !== undefined) lines.push(`load imbalance (max/mean): ${s.imbalance.toFixed(2)}`);
  for (const m of s.members) {
    const r = m.limits?.refused;
    if (r) lines.push(`${m.id} refused limits version ${r.version}: ${r.error.split("\n").join("; ")}`);
    const st = m.limits?.staged;
    if (st?.error)
      lines.push(
        `${m.id} cannot load staged limits version ${st.version}: ${st.error.split("\n").join("; ")}`,
      );
  }
  lines.push(...formatPools(s.pools));
  lines.push(...formatGlobal(s.global ?? []));
  return lines.join("\n");
}

/** `v3 (digest)`, `file (digest)`, with `REFUSED v4` when a pushed version could not be loaded. */
function limitsCell(l: MemberRecord["limits"]): string {
  if (l === undefined) return "-";
  const v = l.version > 0 ? `v${l.version}` : "file";
  const staged = l.staged
    ? ` staged v${l.staged.version} ${l.staged.error === undefined ? "ready" : "FAILED"}`
    : "";
  return `${v} (${l.digest})${l.refused ? ` REFUSED v${l.refused.version}` : ""}${staged}`;
}
