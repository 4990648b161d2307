import type { Resolved } from "../config/types.js";
import type { Engine } from "../core/engine.js";
import { ShardlimitError } from "../core/errors.js";
import { policyKindName } from "../core/policy.js";
import { PRIORITIES } from "../core/priority.js";
import type { InspectResponse } from "../protocol/messages.js";
import { ms } from "./key-policy.js";
import type { Ownership } from "./ownership.js";
import { fmt, type Rejection, type WhyLog } from "./why.js";

/**
 * `shardlimit inspect`: what a server knows about one key, built from its live state (rule,
 * ownership, the engine's counter and reporting gateways, the remembered rejections). Read-only.
 * Operator-only: it shows tenants and gateways of every domain (see the README, "Why").
 */
export interface Inspection {
  key: string;
  /** False when no limit applies to the key. */
  limited: boolean;
  owned: boolean;
  owner: { id: string; address: string } | undefined;
  generation: number;
  counters: CounterInspection[];
}

export interface CounterInspection {
  /** `rule` for the key's own limit, `group` for the fair-share limit above it. */
  role: "rule" | "group";
  counterKey: string;
  rule: {
    id: string;
    algorithm: string;
    limit: number;
    windowMs: number;
    source: string;
    shadowMode: boolean;
    fairShareBy?: string;
    reserve?: Record<string, number>;
  };
  /** Absent when this server holds no counter for it (never used here, or forgotten). */
  counter?: { remaining: number; resetMs: number; t: number; x: number; y: number; held?: number };
  /** The key's tenant under a fair-share limit, and its weight. */
  subject?: { id: string; weight: number };
  gateways: GatewayInspection[];
  rejections: (Rejection & { agoMs: number })[];
}

export interface GatewayInspection {
  id: string;
  /** Under classes or tenants: the class and tenant it reports for. */
  priority?: string;
  tenant?: string;
  /** Smoothed offered units per second (admitted + rejected), as the owner measures it. */
  demandPerS: number;
  lastSeenMs: number;
  /** The last policy this server gave it for the key, when remembered. */
  policy?: string;
  units?: number;
  fraction?: number;
}

export interface InspectDeps {
  engine: Engine;
  ownership: Ownership;
  why: WhyLog;
}

export function inspect(deps: InspectDeps, key: string, r: Resolved | undefined, now: number): Inspection {
  const { ownership } = deps;
  const generation = ownership.generation();
  if (r === undefined) {
    return { key, limited: false, owned: true, owner: undefined, generation, counters: [] };
  }
  const o = ownership.ownerOf(r.shardKey);
  const owned = ownership.check(r.shardKey) === "own";
  const counters = [counterOf(deps, r, "rule", now)];
  if (r.parent !== undefined) counters.push(counterOf(deps, r.parent, "group", now));
  return {
    key,
    limited: true,
    owned,
    owner: o === undefined ? undefined : { id: o.id, address: o.address },
    generation,
    counters,
  };
}

function counterOf(deps: InspectDeps, r: Resolved, role: "rule" | "group", now: number): CounterInspection {
  const rule = r.rule;
  const out: CounterInspection = {
    role,
    counterKey: r.counterKey,
    rule: {
      id: rule.id,
      algorithm: rule.algorithm,
      limit: rule.limit,
      windowMs: rule.windowMs,
      source: `${rule.source.file}${rule.source.path ? ` ${rule.source.path}` : ""}`,
      shadowMode: rule.shadowMode,
      ...(rule.fairShare ? { fairShareBy: rule.fairShare.by } : {}),
      ...(rule.reserve ? { reserve: { ...rule.reserve } as Record<string, number> } : {}),
    },
    ...(r.subject ? { subject: { ...r.subject } } : {}),
    gateways: [],
    rejections: deps.why.rejections(r.counterKey).map((x) => ({ ...x, agoMs: Math.max(0, now - x.lastAt) })),
  };
  const c = deps.engine.existing(r.counterKey);
  if (c !== undefined && !rule.unlimited) {
    const d = deps.engine.peek(r.counterKey, rule, now);
    out.counter = {
      remaining: Number.isFinite(d.remaining) ? d.remaining : 0,
      resetMs: ms(d.resetAt - now),
      t: c.t - now,
      x: c.x,
      y: c.y,
      ...(rule.algorithm === "concurrency" ? { held: rule.limit - d.remaining } : {}),
    };
    const notes = deps.why.gateways(r.counterKey);
    c.clients?.forEach((id, s) => {
      // Under classes or tenants the table's id is `rank \0 tenant \0 gateway`.
      const parts = id.split("\u0000");
      const gw = parts[parts.length - 1]!;
      const note = notes.get(gw);
      out.gateways.push({
        id: gw,
        ...(parts.length === 3
          ? { priority: PRIORITIES[Number(parts[0])] ?? parts[0], tenant: parts[1] }
          : {}),
        demandPerS: s.demand * 1000,
        lastSeenMs: Math.max(0, now - s.lastSeen),
        ...(note ? { policy: policyKindName(note.kind), units: note.units, fraction: note.fraction } : {}),
      });
    });
  }
  return out;
}

/** The inspection in words, for people (`shardlimit inspect`, `/inspect`). */
export function formatInspection(x: Inspection): string {
  const lines = [`key         ${x.key}`];
  if (!x.limited) {
    lines.push("rule        none: no limit applies to this key (always allowed)");
    return `${lines.join("\n")}\n`;
  }
  const owner = x.owner === undefined ? "unknown" : `${x.owner.id} at ${x.owner.address}`;
  lines.push(
    `owner       ${x.owned ? `this server (${owner})` : `${owner}: NOT this server`}, generation ${x.generation}`,
  );
  for (const c of x.counters) {
    const r = c.rule;
    lines.push(
      "",
      `${c.role === "rule" ? "rule" : "group rule"}${c.role === "rule" ? "        " : "  "}${r.id}: ${fmt(r.limit)} per ${r.windowMs} ms, ${r.algorithm}${r.shadowMode ? ", shadow mode" : ""} (${r.source})`,
    );
    if (r.fairShareBy) lines.push(`            fair share by ${JSON.stringify(r.fairShareBy)}`);
    if (r.reserve) lines.push(`            reserve ${JSON.stringify(r.reserve)}`);
    if (c.subject)
      lines.push(`tenant      ${JSON.stringify(c.subject.id)} (weight ${fmt(c.subject.weight)})`);
    lines.push(`counter     ${c.counterKey}`);
    lines.push(
      c.counter === undefined
        ? "            no counter on this server (not used lately, or not owned here)"
        : `            ${fmt(c.counter.remaining)} of ${fmt(r.limit)} left, full again in ${c.counter.resetMs} ms (t ${fmt(c.counter.t)} ms, x ${fmt(c.counter.x)}, y ${fmt(c.counter.y)})`,
    );
    lines.push(`gateways    ${c.gateways.length} reporting`);
    for (const g of c.gateways) {
      const cls = g.tenant !== undefined ? ` [${g.priority} / tenant ${JSON.stringify(g.tenant)}]` : "";
      const policy =
        g.policy === undefined
          ? ""
          : `, policy ${g.policy}${g.policy === "REJECT_FRACTION" ? ` ${fmt((g.fraction ?? 0) * 100)}%` : ""}${g.policy === "GRANT" || g.policy === "REJECT_FRACTION" ? ` (${fmt(g.units ?? 0)} units)` : ""}`;
      lines.push(`  ${g.id}${cls}: demand ${fmt(g.demandPerS)}/s${policy}, seen ${g.lastSeenMs} ms ago`);
    }
    lines.push(`rejections  ${c.rejections.length === 0 ? "none remembered" : "last ones, oldest first"}`);
    for (const j of c.rejections) {
      lines.push(`  ${j.count > 1 ? `${j.count}x ` : ""}${j.text} (last ${j.agoMs} ms ago)`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** The gRPC answer (`Inspect`). */
export function inspectResponse(x: Inspection): InspectResponse {
  return {
    owned: x.owned,
    ownerId: x.owner?.id ?? "",
    ownerAddress: x.owner?.address ?? "",
    generation: x.generation,
    text: formatInspection(x),
    json: JSON.stringify(x),
  };
}

/**
 * Asks the member at `owner` for its inspection of `key` (Peer.Inspect, bounded in time), the answer
 * marked with this server's id (`askedBy`); undefined when `owner` is this server.
 */
export type AskOwner = (
  owner: { id: string; address: string },
  key: string,
) => Promise<InspectResponse> | undefined;

/**
 * `Inspect` on any member: its own answer when it owns the key (or no limit applies, or it is the
 * owner itself), else the owner's, asked over Peer.Inspect, so an operator needs to reach only one
 * member. When the owner cannot answer, this member's own view with the reason (`ownerError`).
 */
export async function inspectAnyMember(
  local: Inspection,
  key: string,
  ask: AskOwner | undefined,
): Promise<InspectResponse> {
  const own = inspectResponse(local);
  const asked = !local.owned && local.owner !== undefined ? ask?.(local.owner, key) : undefined;
  if (asked === undefined) return own;
  try {
    return await asked;
  } catch (err) {
    const e = err as { details?: string; message?: string };
    return { ...own, ownerError: `${local.owner!.id} at ${local.owner!.address}: ${e.details || e.message}` };
  }
}

/** What an HTTP handler answers. */
export interface HttpAnswer {
  status: number;
  contentType: string;
  body: string;
}

/**
 * `GET /inspect?key=DOMAIN/k=v[&format=json]` on the HTTP port: one function, so the access check
 * (operator-only) wraps it whole. A bad or missing key is a 400 naming what is wrong.
 */
export type InspectEndpoint = (query: URLSearchParams) => HttpAnswer;

export function inspectEndpoint(inspectKey: (key: string) => Inspection): InspectEndpoint {
  return keyEndpoint(inspectKey, formatInspection);
}

/**
 * `?key=...[&format=json]` answered from `inspectKey` (a server's inspection, a gateway's), in
 * words or JSON; undefined from it is a 404 saying so.
 */
export function keyEndpoint<T>(
  inspectKey: (key: string) => T | undefined,
  words: (x: T) => string,
): InspectEndpoint {
  return (query) => {
    const key = query.get("key");
    if (key === null || key === "") {
      return { status: 400, contentType: "text/plain", body: "inspect: missing ?key=DOMAIN/key=value\n" };
    }
    let x: T | undefined;
    try {
      x = inspectKey(key);
    } catch (err) {
      if (!(err instanceof ShardlimitError)) throw err;
      return { status: 400, contentType: "text/plain", body: `${err.message}\n` };
    }
    if (x === undefined) {
      return {
        status: 404,
        contentType: "text/plain",
        body: `inspect: no limit applies to ${JSON.stringify(key)}, or the limits are not known yet\n`,
      };
    }
    return query.get("format") === "json"
      ? { status: 200, contentType: "application/json", body: `${JSON.stringify(x)}\n` }
      : { status: 200, contentType: "text/plain", body: words(x) };
  };
}
