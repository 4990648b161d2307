import { appendFileSync } from "node:fs";
import { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { GrpcTransport } from "../../src/client/grpc-transport.js";
import type { ClientTransport, Done } from "../../src/client/transport.js";
import { connectEtcd } from "../../src/cluster/etcd-client.js";
import { systemClock } from "../../src/core/clock.js";
import { errorName } from "../../src/protocol/item-errors.js";
import type { ClusterView, ReportResponse } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { ownerIn } from "../../src/testkit/cluster-view.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { InvariantChecker, type Violation } from "../../src/testkit/invariants.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";

/** Diagnostics: with CHAOS_TRACE=<file>, reports, answers and decisions are appended as JSON lines. */
const TRACE = process.env.CHAOS_TRACE;
let traceBuf: string[] = [];
export function trace(o: object): void {
  if (TRACE === undefined) return;
  traceBuf.push(JSON.stringify({ t: Date.now(), ...o }));
  if (traceBuf.length >= 500) flushTrace();
}
export function flushTrace(): void {
  if (TRACE === undefined || traceBuf.length === 0) return;
  appendFileSync(TRACE, `${traceBuf.join("\n")}\n`);
  traceBuf = [];
}

/**
 * What the chaos scenarios of issue 11 share: a real etcd and N `shardlimit serve` processes on
 * loopback (started, killed, restarted, with every exit judged: a crash is an exit nobody asked
 * for), sync `Check` load and batched load from GatewayLimiter instances in this process, every
 * decision recorded into an InvariantChecker per mode, errors counted by code, and the figures
 * printed. Each scenario is one describe in its own file.
 */

// ---- seeded randomness --------------------------------------------------------------------------

/** CHAOS_SEED when set (to repeat a run), otherwise a fresh one; printed by the scenarios. */
export function chaosSeed(): number {
  const env = process.env.CHAOS_SEED;
  return env !== undefined && env !== "" ? Number(env) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
}

export const sleepMs = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- the cluster ---------------------------------------------------------------------------------

export interface ExitRecord {
  id: string;
  /** What the test sent (undefined: nothing, so any exit is a crash). */
  sent: NodeJS.Signals | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  crash: boolean;
  /** The last lines of its output, for a crash. */
  tail?: string;
}

export interface ChaosServer {
  readonly id: string;
  readonly proc: ServerProcess;
  readonly rpc: RateLimiterRpc;
  /** Running (started and not exited). */
  up(): boolean;
  /** Every stdout line of every incarnation, in order (JSON log lines). */
  readonly lines: string[];
}

export interface ChaosCluster {
  readonly etcd: EtcdProcess;
  readonly prefix: string;
  readonly servers: ChaosServer[];
  readonly exits: ExitRecord[];
  server(id: string): ChaosServer;
  start(id: string): Promise<void>;
  /** Sends `signal` and waits for the exit; records what was asked so the exit is judged. */
  kill(id: string, signal: NodeJS.Signals): Promise<void>;
  /** The current assigner leader's member id (etcd key `<prefix>assigner/leader`). */
  leader(): Promise<string | undefined>;
  /** A cluster view from the first running server that answers. */
  view(): Promise<ClusterView>;
  /** Waits until every running server is ready and on one generation with every running member. */
  settled(timeoutMs?: number): Promise<number>;
  /** Log lines at level error or fatal (pino >= 50) of every incarnation, by server. */
  errorLogs(): { id: string; line: string }[];
  /** Exits nobody asked for, and exits of a SIGTERM with a code other than 0. */
  crashes(): ExitRecord[];
  stop(): Promise<void>;
}

export interface ChaosClusterOptions {
  servers: number;
  config: string;
  leaseTtlSeconds?: number;
  extraArgs?: string[];
  logLevel?: string;
}

export async function startChaosCluster(o: ChaosClusterOptions): Promise<ChaosCluster> {
  ensureBuilt();
  const etcd = await startEtcd();
  const etcdClient = connectEtcd([etcd.url]);
  const configPath = writeConfig(o.config);
  const prefix = `/chaos${Date.now().toString(36)}/`;
  const exits: ExitRecord[] = [];
  const servers: ChaosServer[] = [];
  const sentTo = new Map<string, NodeJS.Signals | undefined>();
  for (let i = 0; i < o.servers; i++) {
    const id = `s${i + 1}`;
    const lines: string[] = [];
    const proc = await serverProcess({
      id,
      configPath,
      etcdUrl: etcd.url,
      prefix,
      cli: "built",
      leaseTtlSeconds: o.leaseTtlSeconds ?? 2,
      logLevel: o.logLevel ?? "info",
      extraArgs: o.extraArgs,
      readyTimeoutMs: 30_000,
      onLine: (l) => lines.push(l),
    });
    const rpc = connect(proc.address, {
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 500,
    });
    servers.push({
      id,
      proc,
      rpc,
      lines,
      up: () => {
        const c = proc.child?.child;
        return c !== undefined && c.exitCode === null && c.signalCode === null;
      },
    });
  }
  const server = (id: string) => {
    const s = servers.find((x) => x.id === id);
    if (!s) throw new Error(`no server ${id}`);
    return s;
  };
  const c: ChaosCluster = {
    etcd,
    prefix,
    servers,
    exits,
    server,
    async start(id) {
      const s = server(id);
      sentTo.set(id, undefined);
      const starting = s.proc.start();
      const child = s.proc.child!;
      child.exited.then(({ code, signal }) => {
        const sent = sentTo.get(id);
        // Asked to die: SIGKILL must end it by that signal, SIGTERM with a clean exit (0).
        const crash = sent === undefined || (sent === "SIGTERM" ? code !== 0 : signal !== sent);
        exits.push({
          id,
          sent,
          code,
          signal,
          at: Date.now(),
          crash,
          tail: crash ? child.output().slice(-3000) : undefined,
        });
      });
      await starting;
    },
    async kill(id, signal) {
      const s = server(id);
      const p = s.proc.child;
      if (!p || !s.up()) return;
      sentTo.set(id, signal);
      p.child.kill(signal);
      await p.exited;
    },
    async leader() {
      const v = await etcdClient.get(`${prefix}assigner/leader`).string();
      return v ?? undefined;
    },
    async view() {
      // Three rounds: with hundreds of gateways in this process its own calls can miss a deadline.
      for (let round = 0; round < 3; round++) {
        for (const s of servers) {
          if (!s.up()) continue;
          try {
            return await s.rpc.getClusterView({}, { deadlineMs: 3000 });
          } catch {}
        }
      }
      throw new Error("no server answered GetClusterView in three rounds");
    },
    async settled(timeoutMs = 30_000) {
      let generation = 0;
      await waitFor(
        "every running server ready on one generation",
        async () => {
          const up = servers.filter((s) => s.up());
          await waitAllReady(
            up.map((s) => s.proc),
            1000,
          );
          const gens = new Set<number>();
          for (const s of up) {
            const v = await s.rpc.getClusterView({}, { deadlineMs: 1000 });
            if (v.members.length !== up.length) return false;
            gens.add(v.generation);
          }
          generation = [...gens][0] ?? 0;
          return gens.size === 1;
        },
        timeoutMs,
        100,
      );
      return generation;
    },
    errorLogs() {
      const out: { id: string; line: string }[] = [];
      for (const s of servers)
        for (const line of s.lines) {
          if (!line.startsWith("{")) continue;
          try {
            const l = JSON.parse(line) as { level?: number };
            if ((l.level ?? 0) >= 50) out.push({ id: s.id, line });
          } catch {}
        }
      return out;
    },
    crashes: () => exits.filter((e) => e.crash),
    async stop() {
      if (TRACE !== undefined) {
        flushTrace();
        for (const s of servers) appendFileSync(`${TRACE}.${s.id}.log`, `${s.lines.join("\n")}\n`);
      }
      for (const s of servers) sentTo.set(s.id, "SIGKILL");
      await Promise.all(servers.map((s) => s.proc.stop("SIGKILL").catch(() => {})));
      for (const s of servers) s.rpc.close();
      etcdClient.close();
      await etcd.destroy();
      await killAllCli();
    },
  };
  return c;
}

// ---- errors by code ------------------------------------------------------------------------------

export class ErrorCounts {
  readonly byCode = new Map<string, number>();
  bump(code: string, n = 1): void {
    this.byCode.set(code, (this.byCode.get(code) ?? 0) + n);
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.byCode.entries()].sort());
  }
}

/**
 * The gRPC transport of the gateways, counting what they see: failed calls by gRPC code, and
 * per-item errors in report answers by code (NOT_OWNER, SLICE_NOT_READY...), plus too-old answers.
 */
export class CountingTransport implements ClientTransport {
  private readonly inner = new GrpcTransport({
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 500,
  });
  private readonly handles = new Map<string, string>();
  constructor(readonly errors: ErrorCounts) {}
  private wrap<T>(what: string, done: Done<T>, inspect?: (res: T) => void): Done<T> {
    return (err, res) => {
      if (err !== undefined) {
        this.errors.bump(`${what}:grpc:${(err as { code?: number }).code ?? "?"}`);
        trace({ ev: `${what}-err`, code: (err as { code?: number }).code });
      } else if (res !== undefined && inspect) inspect(res);
      done(err, res);
    };
  }
  report(
    address: string,
    req: Parameters<ClientTransport["report"]>[1],
    timeoutMs: number,
    done: Done<ReportResponse>,
  ) {
    const sentAt = Date.now();
    const names = req.entries.map((e) => e.key || this.handles.get(`${address}#${e.keyHandle}`) || "?");
    this.inner.report(
      address,
      req,
      timeoutMs,
      this.wrap("report", done, (res) => {
        res.policies.forEach((p, i) => {
          if (p.keyHandle) this.handles.set(`${address}#${p.keyHandle}`, names[i]!);
        });
        if (TRACE !== undefined)
          trace({
            ev: "rep",
            sentAt,
            addr: address,
            c: req.clientId,
            seq: req.seq,
            gen: req.generation,
            e: req.entries.map((e, i) => [names[i], e.admitted, e.rejected, e.windowAdmitted]),
            inc: res.incarnation,
            rgen: res.generation,
            dup: res.duplicate,
            p: res.policies.map((p) =>
              p.error?.code
                ? [errorName(p.error.code)]
                : [
                    p.kind ?? 0,
                    p.units ?? 0,
                    p.remaining ?? 0,
                    p.resetMs ?? 0,
                    p.validMs ?? 0,
                    p.gateways ?? 0,
                  ],
            ),
          });
        if (res.tooOld) this.errors.bump("report:too_old");
        for (const p of res.policies)
          if (p.error?.code) this.errors.bump(`report:${errorName(p.error.code)}`);
      }),
    );
  }
  check(...a: Parameters<ClientTransport["check"]>) {
    this.inner.check(a[0], a[1], a[2], this.wrap("check", a[3]));
  }
  clusterView(...a: Parameters<ClientTransport["clusterView"]>) {
    this.inner.clusterView(a[0], a[1], this.wrap("view", a[2]));
  }
  limits(...a: Parameters<ClientTransport["limits"]>) {
    this.inner.limits(a[0], a[1], a[2], this.wrap("limits", a[3]));
  }
  /**
   * Not passed on: the transport is shared by every limiter of the test, and one limiter's
   * `drop` of a member that left would close the channel under the others' calls in flight (seen
   * as INTERNAL errors). The test closes it at the end; a dead server's channel just fails fast.
   */
  drop(_address: string) {}
  close() {
    this.inner.close();
  }
}

// ---- load ----------------------------------------------------------------------------------------

export interface SyncLoad {
  readonly sent: () => number;
  readonly skipped: () => number;
  /** Answers the owner decided in another window than the one they arrived in (see decidedIn). */
  readonly movedByReset: () => number;
  /** Stops sending and waits for the calls in flight. */
  stop(): Promise<void>;
}

/**
 * Paced sync `Check` load: every `tickMs`, one call of cost 1 per key, round robin through the
 * running servers, at most `maxInFlight` outstanding. Each answer is recorded at the time it
 * arrives (under saturation a window fills early: a call decided after a boundary belongs to the
 * window that decided it), an error or a failed call as refused.
 */
export function syncLoad(o: {
  cluster: ChaosCluster;
  keys: readonly string[];
  checker: InvariantChecker;
  errors: ErrorCounts;
  tickMs: number;
  maxInFlight?: number;
  deadlineMs?: number;
  /** The keys' fixed window: an answer is recorded in the window the owner decided it in. */
  windowMs: number;
  /** Called for each admitted answer with the server called, for tracing excess to a door. */
  onAdmit?: (key: string, at: number, via: string) => void;
}): SyncLoad {
  let running = true;
  let sent = 0;
  let skipped = 0;
  let inFlight = 0;
  let rr = 0;
  let movedByReset = 0;
  const pending = new Set<Promise<void>>();
  const maxInFlight = o.maxInFlight ?? 200;
  const loop = (async () => {
    const t0 = Date.now();
    for (let tick = 0; running; tick++) {
      const up = o.cluster.servers.filter((s) => s.up());
      for (const key of o.keys) {
        if (up.length === 0 || inFlight >= maxInFlight) {
          skipped++;
          continue;
        }
        // Offset per tick, so each key goes through every server (not key i through server i).
        const via = up[(rr++ + tick) % up.length]!;
        const id = `${key}#${sent++}`;
        const sentAt = Date.now();
        inFlight++;
        const p = via.rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: o.deadlineMs ?? 1000 }).then(
          (r) => {
            const res = r.results[0]!;
            if (res.error) o.errors.bump(errorName(res.error.code));
            const answeredAt = Date.now();
            const at = decidedIn(o.windowMs, sentAt, answeredAt, res.resetMs);
            if (at !== answeredAt) movedByReset++;
            const allowed = res.allowed === true && !res.error;
            o.checker.record({ key, id, at, cost: 1, allowed });
            if (allowed) o.onAdmit?.(key, at, via.id);
          },
          (err: { code?: number }) => {
            o.errors.bump(`grpc:${err.code ?? "?"}`);
            o.checker.record({ key, id, at: Date.now(), cost: 1, allowed: false });
          },
        );
        const tracked = p.finally(() => {
          inFlight--;
          pending.delete(tracked);
        });
        pending.add(tracked);
      }
      const wait = t0 + (tick + 1) * o.tickMs - Date.now();
      await sleepMs(Math.max(0, wait));
    }
  })();
  return {
    sent: () => sent,
    skipped: () => skipped,
    movedByReset: () => movedByReset,
    async stop() {
      running = false;
      await loop;
      await Promise.all(pending);
    },
  };
}

/**
 * When an answer was decided, as far as the window goes: the owner decided it between `sentAt`
 * and `answeredAt` (same machine, same clock), and its `resetMs` says how far the end of the
 * window it counted the call in was. The window end that is a multiple of `windowMs` in
 * [sentAt + resetMs, answeredAt + resetMs] names that window (a stalled test process would
 * otherwise put answers decided before a boundary after it); the answer time when there is none
 * or the range is ambiguous.
 */
export function decidedIn(
  windowMs: number,
  sentAt: number,
  answeredAt: number,
  resetMs: number | undefined,
): number {
  if (resetMs === undefined || !(resetMs > 0) || resetMs > windowMs) return answeredAt;
  const lo = sentAt + resetMs;
  const hi = answeredAt + resetMs;
  const end = Math.ceil((lo - 1) / windowMs) * windowMs;
  if (end < lo - 1 || end > hi + 1 || end + windowMs <= hi + 1) return answeredAt;
  const at = end - windowMs / 2;
  // Same window as the answer time: keep the answer time.
  return Math.floor(at / windowMs) === Math.floor(answeredAt / windowMs) ? answeredAt : at;
}

export interface Gateways {
  readonly limiters: GatewayLimiter[];
  readonly transport: CountingTransport;
  /** Decisions made (admitted + refused). */
  decisions(): number;
  /** Stops deciding (the limiters keep reporting until `close`). */
  stopLoad(): Promise<void>;
  close(): void;
  /** Warnings the limiters logged, by message. */
  readonly warnings: ErrorCounts;
}

/**
 * `count` GatewayLimiter instances in this process, each its own client id, sharing one counting
 * gRPC transport (one channel per server, so hundreds of them stay cheap). Every local decision
 * (what a caller is told) is recorded with its own time.
 */
export async function startGateways(o: {
  cluster: ChaosCluster;
  count: number;
  reportIntervalMs?: number;
  errors: ErrorCounts;
  clientPrefix?: string;
  random: () => number;
}): Promise<Gateways> {
  const transport = new CountingTransport(o.errors);
  const warnings = new ErrorCounts();
  const logger = {
    warn: (obj: object, msg: string) => {
      warnings.bump(msg);
      trace({ ev: "warn", msg, ...obj });
    },
    info: (obj: object, msg: string) => trace({ ev: "info", msg, ...obj }),
  };
  const servers = o.cluster.servers.map((s) => s.proc.address);
  const limiters: GatewayLimiter[] = [];
  for (let i = 0; i < o.count; i++) {
    const l = new GatewayLimiter({
      servers,
      clientId: `${o.clientPrefix ?? "gw"}-${i}`,
      transport,
      clock: systemClock,
      reportIntervalMs: o.reportIntervalMs ?? 100,
      random: o.random,
      logger,
    });
    limiters.push(l);
  }
  // Started 25 at a time: hundreds fetching the limits and the view at once time out on a busy machine.
  for (let i = 0; i < limiters.length; i += 25) {
    const batch = limiters.slice(i, i + 25);
    for (const l of batch) l.start();
    await Promise.all(batch.map((l) => l.whenReady(30_000)));
  }
  let decisions = 0;
  const loops: Promise<void>[] = [];
  let running = false;
  const g: Gateways & { run: typeof run } = {
    limiters,
    transport,
    warnings,
    decisions: () => decisions,
    async stopLoad() {
      running = false;
      await Promise.all(loops);
    },
    close() {
      for (const l of limiters) l.close();
      transport.close();
    },
    run,
  };
  /** Drives `rate(key)` decisions per second per key, spread over the gateways `pick` chooses. */
  function run(p: {
    keys: readonly string[];
    perSecond: number;
    tickMs: number;
    checker: InvariantChecker;
    pick: (tick: number, n: number) => number;
  }) {
    running = true;
    const perTick = (p.perSecond * p.tickMs) / 1000;
    loops.push(
      (async () => {
        const t0 = Date.now();
        let carry = 0;
        for (let tick = 0; running; tick++) {
          carry += perTick;
          const n = Math.floor(carry);
          carry -= n;
          for (let j = 0; j < n; j++)
            for (const key of p.keys) {
              const gw = limiters[p.pick(tick, j) % limiters.length]!;
              const allowed = gw.decide(key);
              decisions++;
              if (TRACE !== undefined && allowed && process.env.CHAOS_TRACE_DECISIONS !== "0") {
                const d = gw.describe(key);
                trace({
                  ev: "ok",
                  k: key,
                  g: p.pick.length >= 0 ? limiters.indexOf(gw) : 0,
                  fb: d?.fallback,
                  kn: d?.known,
                });
              }
              p.checker.record({ key, at: Date.now(), cost: 1, allowed });
            }
          await sleepMs(Math.max(0, t0 + (tick + 1) * p.tickMs - Date.now()));
        }
      })(),
    );
  }
  return g;
}

/** Starts paced batched decisions (see `startGateways`); stop with `gateways.stopLoad()`. */
export function batchedLoad(
  gateways: Gateways,
  p: {
    keys: readonly string[];
    perSecond: number;
    tickMs: number;
    checker: InvariantChecker;
    pick: (tick: number, n: number) => number;
  },
): void {
  (gateways as Gateways & { run: (x: typeof p) => void }).run(p);
}

// ---- figures -------------------------------------------------------------------------------------

export interface ModeFigures {
  mode: string;
  maxRatio: number;
  maxRatioByKey: Record<string, number>;
  violations: Violation[];
  doubled: number;
  epsilon: number;
}

export function figures(mode: string, checker: InvariantChecker, epsilon: number): ModeFigures {
  return {
    mode,
    maxRatio: checker.maxRatio(),
    maxRatioByKey: checker.maxRatioByKey(),
    violations: checker.check(epsilon),
    doubled: checker.duplicates().length,
    epsilon,
  };
}

/** Prints the figures issue 11 asks for, one `[chaos:<name>]` line each. */
export function printFigures(
  name: string,
  t0: number,
  modes: readonly ModeFigures[],
  cluster: ChaosCluster,
  errors: Record<string, ErrorCounts>,
  extra: Record<string, unknown> = {},
): void {
  const p = (s: string) => console.log(`[chaos:${name}] ${s}`);
  for (const m of modes) {
    p(
      `${m.mode}: max admitted/limit ${m.maxRatio.toFixed(3)} (epsilon ${m.epsilon}), doubled ${m.doubled}, windows over the bound ${m.violations.length}`,
    );
    p(
      `${m.mode}: max by key ${JSON.stringify(Object.fromEntries(Object.entries(m.maxRatioByKey).map(([k, v]) => [k, Number(v.toFixed(3))])))}`,
    );
    for (const v of m.violations)
      p(
        `${m.mode}: over the bound: ${v.key} window at +${v.windowStart - t0} ms: ${v.admitted} admitted > ${v.bound} (ratio ${v.ratio.toFixed(3)})`,
      );
  }
  const crashes = cluster.crashes();
  p(
    `crashes: ${crashes.length}; exits: ${JSON.stringify(cluster.exits.map((e) => ({ id: e.id, sent: e.sent, code: e.code, signal: e.signal, at: e.at - t0 })))}`,
  );
  for (const c of crashes)
    p(`crash of ${c.id} (sent ${c.sent}, code ${c.code}, signal ${c.signal}):\n${c.tail}`);
  for (const [who, e] of Object.entries(errors))
    p(`errors seen by ${who}, by code: ${JSON.stringify(e.toJSON())}`);
  const errLogs = cluster.errorLogs();
  p(`server error logs: ${errLogs.length}`);
  for (const e of errLogs.slice(0, 20)) p(`  ${e.id}: ${e.line.slice(0, 400)}`);
  for (const [k, v] of Object.entries(extra)) p(`${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
}

/** A checker for keys that all share one fixed window. */
export function fixedChecker(limit: number, windowMs: number): InvariantChecker {
  return new InvariantChecker(() => ({ limit, windowMs }));
}

// ---- investigation -------------------------------------------------------------------------------

export interface OwnerChange {
  at: number;
  key: string;
  owner: string;
  generation: number;
  /** Which server's view said so. */
  seenBy: string;
}

/**
 * Polls the assignment (every running server's view, every `everyMs`) and records each change of
 * a key's owner as any server sees it: what a window over the bound is read against.
 */
export function trackOwners(cluster: ChaosCluster, keys: readonly string[], everyMs = 200) {
  const changes: OwnerChange[] = [];
  const last = new Map<string, string>();
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const s of cluster.servers) {
        if (!s.up()) continue;
        try {
          const v = await s.rpc.getClusterView({}, { deadlineMs: 500 });
          for (const key of keys) {
            const owner = ownerIn(v, key);
            const k = `${s.id} ${key}`;
            if (last.get(k) !== `${owner}@${v.generation}`) {
              last.set(k, `${owner}@${v.generation}`);
              changes.push({ at: Date.now(), key, owner, generation: v.generation, seenBy: s.id });
            }
          }
        } catch {}
      }
      await sleepMs(everyMs);
    }
  })();
  return {
    changes,
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Server log lines (JSON, with `time`) between `from` and `to` whose msg matches `re`. */
export function logsBetween(cluster: ChaosCluster, from: number, to: number, re: RegExp): string[] {
  const out: { t: number; s: string }[] = [];
  for (const s of cluster.servers)
    for (const line of s.lines) {
      if (!line.startsWith("{")) continue;
      try {
        const l = JSON.parse(line) as { time?: number; msg?: string };
        if (l.time !== undefined && l.time >= from && l.time <= to && re.test(l.msg ?? ""))
          out.push({ t: l.time, s: `${s.id} ${line.slice(0, 300)}` });
      } catch {}
    }
  return out.sort((a, b) => a.t - b.t).map((x) => x.s);
}

/** Admitted sync answers by key, window start and server called. */
export class AdmittedVia {
  private readonly m = new Map<string, number>();
  constructor(private readonly windowMs: number) {}
  readonly onAdmit = (key: string, at: number, via: string) => {
    const id = `${key} ${at - (at % this.windowMs)} ${via}`;
    this.m.set(id, (this.m.get(id) ?? 0) + 1);
  };
  of(key: string, windowStart: number, ids: readonly string[]): string {
    return ids.map((id) => `${id} ${this.m.get(`${key} ${windowStart} ${id}`) ?? 0}`).join(", ");
  }
}

/** What a window over the bound is read against: doors, owners as seen, server logs around it. */
export function explain(
  v: Violation,
  t0: number,
  windowMs: number,
  cluster: ChaosCluster,
  via: AdmittedVia,
  owners: readonly OwnerChange[],
): string {
  const from = v.windowStart - windowMs;
  const to = v.windowStart + windowMs;
  const rel = (t: number) => `+${t - t0}`;
  const seen = owners
    .filter((c) => c.key === v.key && c.at >= from && c.at <= to)
    .map((c) => `${rel(c.at)} ${c.seenBy}: ${c.owner}@g${c.generation}`);
  const logs = logsBetween(
    cluster,
    from,
    to,
    /hand|assign|slice|drain|deciding|regist|lease|leader|serving|shut/i,
  );
  return [
    `${v.key} window +${v.windowStart - t0}..+${v.windowStart + windowMs - t0} ms: ${v.admitted} admitted (ratio ${v.ratio.toFixed(3)})`,
    `  admitted by server called: ${via.of(
      v.key,
      v.windowStart,
      cluster.servers.map((s) => s.id),
    )}`,
    `  owner as each server saw it (from one window before): ${seen.join("; ") || "(no change)"}`,
    "  server logs around it:",
    ...logs.map((l) => `    ${l}`),
  ].join("\n");
}
