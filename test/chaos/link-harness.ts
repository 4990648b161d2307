import { execFile } from "node:child_process";
import net from "node:net";
import { promisify } from "node:util";
import type { InvariantChecker } from "../../src/testkit/invariants.js";
import type { ServerProcess } from "../../src/testkit/serve.js";

/**
 * Shared pieces of the link chaos scenarios (peers, etcd-compaction, lost-answers,
 * dup-client-ids): a TCP link the test controls, placed in front of a server or etcd, and the
 * figures every scenario prints.
 */

const run = promisify(execFile);

/** The process that owns the client end of a loopback connection (by its source port), via ss. */
async function pidOfPort(port: number): Promise<number | undefined> {
  try {
    const { stdout } = await run("ss", ["-Htnp", "state", "established", `( sport = :${port} )`]);
    const m = /pid=(\d+)/.exec(stdout);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface LinkStats {
  /** Connections accepted (including refused ones). */
  accepted: number;
  /** Connections refused or destroyed by `cut` / `blockFrom`. */
  cut: number;
  /** Connections torn down after a request passed, their answers discarded (`loseAnswers`). */
  answersLost: number;
}

export interface Link {
  /** host:port to connect to (or to advertise). */
  readonly address: string;
  /** http://host:port, for etcd. */
  readonly url: string;
  /** Where connections go; settable until the first connection (a server's port is chosen late). */
  target: string;
  readonly stats: LinkStats;
  /** Refuses new connections and destroys the open ones. */
  cut(): void;
  restore(): void;
  /**
   * Refuses connections from these processes (source pid, found with `ss` at accept) and destroys
   * theirs that are open; an empty set lets everyone through again. Cuts one server's outgoing
   * links at every other server's link while the others still reach each other.
   */
  blockFrom(pids: ReadonlySet<number>): void;
  /**
   * With probability `p` per chunk the client sends, that connection's answers are lost: bytes
   * from the server are discarded from then on and both ends are destroyed `holdMs` later, so the
   * request reaches the server (and is applied) but its answer never comes back. HTTP/2
   * multiplexes calls over one connection, so this loses whole connections, not single answers.
   * 0 turns it off.
   */
  loseAnswers(p: number, holdMs?: number): void;
  close(): Promise<void>;
}

interface Conn {
  down: net.Socket;
  up: net.Socket | undefined;
  pid: number | undefined;
  losing: boolean;
}

export async function startLink(target = ""): Promise<Link> {
  const conns = new Set<Conn>();
  let open = true;
  let blocked: ReadonlySet<number> = new Set();
  let loseP = 0;
  let holdMs = 100;
  const stats: LinkStats = { accepted: 0, cut: 0, answersLost: 0 };
  const kill = (c: Conn) => {
    c.down.destroy();
    c.up?.destroy();
    conns.delete(c);
  };
  const server = net.createServer((down) => {
    stats.accepted++;
    down.pause();
    const c: Conn = { down, up: undefined, pid: undefined, losing: false };
    conns.add(c);
    down.on("error", () => kill(c)).on("close", () => kill(c));
    const connect = () => {
      if (down.destroyed) return;
      if (!open || (c.pid !== undefined && blocked.has(c.pid))) {
        stats.cut++;
        kill(c);
        return;
      }
      const [host, port] = splitAddress(link.target);
      const up = net.connect(port, host);
      c.up = up;
      up.on("error", () => kill(c)).on("close", () => kill(c));
      down.on("data", (chunk: Buffer) => {
        up.write(chunk);
        if (!c.losing && loseP > 0 && Math.random() < loseP) {
          c.losing = true;
          stats.answersLost++;
          setTimeout(() => kill(c), holdMs);
        }
      });
      up.on("data", (chunk: Buffer) => {
        if (!c.losing) down.write(chunk);
      });
      down.resume();
    };
    // Who is calling matters only while someone is blocked; the lookup is done for every
    // connection so that a later blockFrom can find the open ones.
    pidOfPort(down.remotePort ?? 0).then((pid) => {
      c.pid = pid;
      connect();
    });
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
  const link: Link = {
    address: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    target,
    stats,
    cut() {
      open = false;
      for (const c of [...conns]) {
        stats.cut++;
        kill(c);
      }
    },
    restore() {
      open = true;
    },
    blockFrom(pids) {
      blocked = pids;
      for (const c of [...conns]) {
        if (c.pid !== undefined && pids.has(c.pid)) {
          stats.cut++;
          kill(c);
        }
      }
    },
    loseAnswers(p, hold = 100) {
      loseP = p;
      holdMs = hold;
    },
    close: () =>
      new Promise((resolve) => {
        for (const c of [...conns]) kill(c);
        server.close(() => resolve());
      }),
  };
  return link;
}

function splitAddress(a: string): [string, number] {
  const u = a.includes("://") ? new URL(a) : new URL(`tcp://${a}`);
  return [u.hostname, Number(u.port)];
}

// ---- figures ---------------------------------------------------------------------------------

/** Counts by name (error codes seen by callers, say). */
export class Tally {
  readonly counts = new Map<string, number>();
  bump(name: string, n = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + n);
  }
  get(name: string): number {
    return this.counts.get(name) ?? 0;
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort());
  }
}

/** Whether each server is still running (or exited 0); prints one line each. */
export function crashes(servers: readonly ServerProcess[], tag: string, expectedDead = new Set<string>()) {
  const out: string[] = [];
  for (const s of servers) {
    const c = s.child?.child;
    if (!c) continue;
    const alive = c.exitCode === null && c.signalCode === null;
    const state = alive ? "alive" : `exited code=${c.exitCode} signal=${c.signalCode}`;
    console.log(`[${tag}] ${s.id}: ${state}`);
    if (!alive && c.exitCode !== 0 && !expectedDead.has(s.id)) out.push(`${s.id} ${state}`);
  }
  return out;
}

/** The figures the issue asks each scenario to print. */
export function printFigures(
  tag: string,
  checker: InvariantChecker,
  o: {
    epsilon: number;
    t0: number;
    errors: Tally;
    crashed: readonly string[];
    doubled: number;
    extra?: string;
  },
): void {
  const max = checker.maxRatioByKey();
  for (const [k, r] of Object.entries(max)) console.log(`[${tag}] ${k} max admitted/limit ${r.toFixed(3)}`);
  const overall = Math.max(0, ...Object.values(max));
  const v = checker.check(o.epsilon);
  for (const w of v)
    console.log(
      `[${tag}] violation ${w.key} window at +${w.windowStart - o.t0} ms (${new Date(w.windowStart).toISOString()}): ${w.admitted} admitted > ${w.bound}`,
    );
  console.log(
    `[${tag}] FIGURES max admitted/limit ${overall.toFixed(3)} (epsilon ${o.epsilon}), violations ${v.length}, doubled ${o.doubled}, duplicate ids ${checker.duplicates().length}, crashes ${o.crashed.length}, errors by code ${JSON.stringify(o.errors)}${o.extra ? `, ${o.extra}` : ""}, run ${Date.now() - o.t0} ms`,
  );
}

/** Reads one counter (summed over label sets matching `labels`) from a server's /metrics. */
export async function metric(httpPort: number, name: string, labels: Record<string, string> = {}) {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = Object.fromEntries(
      (m[3] ?? "")
        .split(",")
        .filter(Boolean)
        .map((kv) => {
          const [k, val] = kv.split("=");
          return [k!, val!.replace(/^"|"$/g, "")];
        }),
    );
    if (Object.entries(labels).every(([k, val]) => ls[k] === val)) sum += Number(m[4]);
  }
  return sum;
}

/** Warn/error log lines of a server (for a report), at most `max`. */
export function problemLines(s: ServerProcess, max = Number(process.env.CHAOS_LOG_LINES ?? 20)): string[] {
  return (s.child?.lines ?? [])
    .filter((l) => /"level":(40|50|60)/.test(l))
    .slice(-max)
    .map((l) => `${s.id}: ${l.slice(0, 400)}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
