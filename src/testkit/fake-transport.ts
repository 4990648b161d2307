import { GatewayLimiter, type GatewayLimiterOptions } from "../client/gateway-limiter.js";
import type { ClientTransport, Done } from "../client/transport.js";
import { decodeKey } from "../config/key.js";
import { compileSources } from "../config/load.js";
import type { LimitConfig } from "../config/types.js";
import { ManualClock } from "../core/clock.js";
import { Engine } from "../core/engine.js";
import { pointToWire } from "../keyspace/hash.js";
import { DEFAULT_INPUT_LIMITS } from "../protocol/input-limits.js";
import type {
  CheckRequest,
  CheckResponse,
  ClusterView,
  Limits,
  ReportRequest,
  ReportResponse,
} from "../protocol/messages.js";
import { Limiter } from "../server/limiter.js";
import { noopMetrics } from "../server/metrics.js";
import { StandaloneOwnership } from "../server/ownership.js";

/** `lose`: the server applies the report but its answer never arrives (the call fails). */
export type Mode = "ok" | "fail" | "hang" | "lose";

/**
 * A transport to real Limiters (one per address) whose answers arrive 1 ms later on a virtual
 * clock, with each address switchable to failing or hanging, and every request recorded.
 */
export class FakeTransport implements ClientTransport {
  readonly reports: { address: string; req: ReportRequest }[] = [];
  readonly modes = new Map<string, Mode>();
  readonly servers = new Map<string, Limiter>();
  view: ClusterView;
  limitsCalls = 0;
  /** Addresses `check` calls went to. */
  readonly checks: string[] = [];
  /** Key handles the servers handed out, per address, to read reports that use them. */
  readonly handles = new Map<string, string>();
  dropped: string[] = [];
  /** Rewrites an answer before it is delivered (per-item errors). */
  rewrite: ((address: string, res: ReportResponse) => ReportResponse) | undefined;

  constructor(
    readonly clock: ManualClock,
    public config: LimitConfig,
    addresses: string[],
  ) {
    for (const a of addresses) this.servers.set(a, this.limiter());
    this.view = { generation: 0, members: [], slices: [], standalone: true };
  }

  /**
   * Each server owns every key, in the generation of the view the gateways are given (as the
   * servers of a real cluster serve the generation they hand out).
   */
  private ownership(): StandaloneOwnership {
    const view = () => this.view;
    return new (class extends StandaloneOwnership {
      override generation(): number {
        return view().generation;
      }
    })("x:1");
  }

  limiter(): Limiter {
    return new Limiter({
      engine: new Engine(),
      clock: this.clock,
      config: this.config,
      ownership: this.ownership(),
      limits: DEFAULT_INPUT_LIMITS,
      metrics: noopMetrics,
    });
  }

  private answer<T>(address: string, done: Done<T>, timeoutMs: number, fn: () => T): void {
    const mode = this.modes.get(address) ?? "ok";
    if (mode === "hang") {
      this.clock.after(timeoutMs, () => done(new Error("deadline exceeded")));
      return;
    }
    this.clock.after(1, () => {
      if (mode === "fail") done(new Error(`connect ECONNREFUSED ${address}`));
      else if (mode === "lose") {
        fn();
        done(new Error("connection reset"));
      } else done(undefined, fn());
    });
  }

  report(address: string, req: ReportRequest, timeoutMs: number, done: Done<ReportResponse>): void {
    this.reports.push({ address, req: structuredClone(req) });
    this.answer(address, done, timeoutMs, () => {
      const res = this.servers.get(address)!.reportAndGetPolicy(structuredClone(req));
      res.policies.forEach((p, i) => {
        if (p.keyHandle) this.handles.set(`${address}#${p.keyHandle}`, req.entries[i]!.key);
      });
      return this.rewrite ? this.rewrite(address, res) : res;
    });
  }

  check(address: string, req: CheckRequest, timeoutMs: number, done: Done<CheckResponse>): void {
    this.checks.push(address);
    this.answer(address, done, timeoutMs, () => this.servers.get(address)!.check(req));
  }

  clusterView(address: string, timeoutMs: number, done: Done<ClusterView>): void {
    this.answer(address, done, timeoutMs, () => this.view);
  }

  limits(address: string, knownVersion: string, timeoutMs: number, done: Done<Limits>): void {
    this.limitsCalls++;
    this.answer(address, done, timeoutMs, () => this.servers.get(address)!.getLimits({ knownVersion }));
  }

  drop(address: string): void {
    this.dropped.push(address);
  }

  close(): void {}
}

/** Two servers' addresses, A owning the lower half of the key space and B the upper. */
export const A = "a:1";
export const B = "b:1";

/** Gives `t` a view of two servers, A and B, splitting the key space in half. */
export function twoOwners(t: FakeTransport, generation = 1): void {
  t.view = {
    generation,
    members: [
      { id: "a", address: A },
      { id: "b", address: B },
    ],
    slices: [
      { start: "0", owner: 0 },
      { start: pointToWire(2 ** 31), owner: 1 },
    ],
    standalone: false,
  };
}

export const YAML = `domain: api
descriptors:
  - key: tenant
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100 }
  - key: strict
    rate_limit: { unit: second, requests_per_unit: 10, local_allowance: 0 }
  - key: closed
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100, fail_mode: closed }
  - key: minute
    rate_limit: { unit: minute, requests_per_unit: 600 }
  - key: conc
    rate_limit: { algorithm: concurrency, requests_per_unit: 4 }
  - key: free
    rate_limit: { unlimited: true }
`;

export function config(yaml = YAML): LimitConfig {
  return compileSources([{ file: "test.yaml", text: yaml }]);
}

/** The key a recorded entry is for, whether it was sent by name or by handle. */
export function entryKey(t: FakeTransport, address: string, e: { key: string; keyHandle?: number }): string {
  return e.key !== "" ? e.key : (t.handles.get(`${address}#${e.keyHandle}`) ?? "?");
}

/** Units the owner at `address` (A by default) has left on a counter key now. */
export function ownerRemaining(t: FakeTransport, key: string, address = A): number {
  const d = decodeKey(key);
  if (typeof d === "string") throw new Error(d);
  const r = t.config.resolve(d.domain, d.entries);
  if (typeof r !== "object") throw new Error(`no limit for ${key}`);
  return t.servers.get(address)!.engine.peek(r.counterKey, r.rule, t.clock.now()).remaining;
}

/**
 * A GatewayLimiter (client id gw1, seeded randomness) on a fresh virtual clock and a
 * FakeTransport to real Limiters at `addresses`, started; `run(ms)` advances the clock.
 */
export function startGateway(
  o: {
    opts?: Partial<GatewayLimiterOptions>;
    addresses?: string[];
    yaml?: string;
    modes?: Record<string, Mode>;
  } = {},
) {
  const addresses = o.addresses ?? ["a:1"];
  const clock = new ManualClock(600_000);
  const t = new FakeTransport(clock, config(o.yaml), addresses);
  for (const [a, m] of Object.entries(o.modes ?? {})) t.modes.set(a, m);
  let seed = 1;
  const limiter = new GatewayLimiter({
    servers: addresses,
    clientId: "gw1",
    transport: t,
    clock,
    random: () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    },
    ...o.opts,
  });
  limiter.start();
  const run = (ms: number) => clock.runUntil(clock.now() + ms);
  return { clock, t, limiter, run };
}
