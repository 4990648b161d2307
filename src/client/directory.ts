import { compileSources } from "../config/load.js";
import type { LimitConfig } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { NotReadyError } from "../core/errors.js";
import { Routing } from "../keyspace/routing.js";
import type { ClientTransport, LimiterLogger } from "./transport.js";

export interface DirectoryOptions {
  readonly servers: readonly string[];
  readonly transport: ClientTransport;
  readonly clock: Clock;
  readonly reportIntervalMs: number;
  readonly reportTimeoutMs: number;
  readonly viewRefreshMs: number;
  readonly logger: LimiterLogger;
}

/** What the directory needs from the rest of the limiter. */
export interface DirectoryPorts {
  /** Holds the limits keys are resolved with; new limits go there. */
  readonly limits: {
    readonly config: LimitConfig | undefined;
    setConfig(config: LimitConfig): void;
  };
  /** Whether reports to this server are failing: it is asked last. */
  isDown(address: string): boolean;
  /** A new assignment generation: servers not among `members` left the cluster. */
  membersChanged(members: ReadonlySet<string>): void;
}

/**
 * What a gateway knows of the cluster: the assignment (who owns which keys, and its generation)
 * and the limits, both fetched from any server that answers, and whether both are known yet.
 */
export class Directory {
  #routing: Routing | undefined;
  private viewAsking = false;
  private viewAskedAt = Number.NEGATIVE_INFINITY;
  private limitsAsking = false;
  private seedTurn = 0;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private closed = false;

  constructor(
    private readonly opts: DirectoryOptions,
    private readonly ports: DirectoryPorts,
  ) {}

  /** The assignment in force; undefined until fetched. */
  get routing(): Routing | undefined {
    return this.#routing;
  }

  get generation(): number {
    return this.#routing?.generation ?? 0;
  }

  get ready(): boolean {
    return this.ports.limits.config !== undefined && this.#routing !== undefined;
  }

  /** Resolves once the limits and the assignment are known; rejects after `timeoutMs`. */
  whenReady(timeoutMs: number): Promise<void> {
    if (this.ready) return Promise.resolve();
    // Nothing would settle a wait added after close(): its deadline would hold the process.
    if (this.closed) return Promise.reject(new NotReadyError("the limiter was closed"));
    return new Promise((resolve, reject) => {
      // The deadline holds the process (ref): a caller awaiting readiness has nothing else keeping
      // its loop alive while gRPC backs off between connection attempts (its timers are unref'd),
      // and a CLI start-up that awaited this then ended with exit code 0 and not a word.
      const timer = this.opts.clock.after(
        timeoutMs,
        () => {
          const i = this.readyWaiters.indexOf(w);
          if (i < 0) return;
          this.readyWaiters.splice(i, 1);
          reject(
            new NotReadyError(
              `no server among ${this.opts.servers.join(", ")} answered with ${
                this.ports.limits.config ? "an assignment" : "the limits"
              } within ${timeoutMs} ms`,
            ),
          );
        },
        { ref: true },
      );
      const w = {
        resolve: () => {
          timer.cancel();
          resolve();
        },
        reject: (e: Error) => {
          timer.cancel();
          reject(e);
        },
      };
      this.readyWaiters.push(w);
    });
  }

  private checkReady(): void {
    if (!this.ready) return;
    for (const w of this.readyWaiters.splice(0)) w.resolve();
  }

  /** Installs limits (fetched, or given by the caller). */
  setConfig(config: LimitConfig): void {
    this.ports.limits.setConfig(config);
    this.checkReady();
  }

  /** A server answered from a later generation than ours: ours is out of date. */
  sawGeneration(generation: number): void {
    if (generation > this.generation) this.refreshView(true);
  }

  /** A server answered with a config version other than ours: fetch the limits again. */
  sawConfigVersion(version: string): void {
    const config = this.ports.limits.config;
    if (config !== undefined && version !== "" && version !== config.version) this.refreshLimits();
  }

  /** Until a first assignment arrives, ask often; after, every viewRefreshMs. */
  refreshIfDue(now: number): void {
    const every = this.#routing === undefined ? 5 * this.opts.reportIntervalMs : this.opts.viewRefreshMs;
    // A wall clock stepped back (now before the last ask) makes it due too, or the assignment
    // would not be asked for again until the clock caught up, maybe hours later.
    if (now - this.viewAskedAt >= every || now < this.viewAskedAt) this.refreshView(true);
  }

  /** Asks servers in turn for the assignment; `force` skips the throttle. */
  refreshView(force: boolean): void {
    const now = this.opts.clock.now();
    if (this.viewAsking || this.closed) return;
    if (!force && now >= this.viewAskedAt && now - this.viewAskedAt < 4 * this.opts.reportIntervalMs) return;
    this.viewAsking = true;
    this.viewAskedAt = now;
    const candidates = this.candidates();
    const ask = (i: number): void => {
      if (i >= candidates.length || this.closed) {
        this.viewAsking = false;
        return;
      }
      const address = candidates[i]!;
      this.opts.transport.clusterView(address, this.opts.reportTimeoutMs, (err, view) => {
        if (err !== undefined || view === undefined) return ask(i + 1);
        const r = Routing.fromView(view, address);
        if (typeof r === "string") return ask(i + 1);
        this.viewAsking = false;
        this.install(r);
      });
    };
    ask(0);
  }

  /** Members of the assignment we hold first (healthy ones first), then the configured seeds. */
  private candidates(): string[] {
    const seeds = this.opts.servers;
    const turn = this.seedTurn++;
    const rotated = seeds.map((_, i) => seeds[(i + turn) % seeds.length]!);
    const members = this.#routing?.addresses ?? [];
    const healthy = members.filter((a) => !this.ports.isDown(a));
    const rest = members.filter((a) => this.ports.isDown(a));
    return [...new Set([...healthy, ...rotated, ...rest])];
  }

  private install(r: Routing): void {
    const held = this.#routing;
    if (held !== undefined && r.generation < held.generation && r.generation !== 0) return;
    this.#routing = r;
    if (held === undefined || r.generation !== held.generation) {
      this.ports.membersChanged(new Set(r.addresses));
    }
    this.checkReady();
  }

  /** Asks servers in turn for the limits (GetLimits), unless an ask is under way. */
  refreshLimits(): void {
    if (this.limitsAsking || this.closed) return;
    this.limitsAsking = true;
    const candidates = this.candidates();
    const known = this.ports.limits.config?.version ?? "";
    const ask = (i: number): void => {
      if (this.closed) return;
      if (i >= candidates.length) {
        this.limitsAsking = false;
        // Without limits nothing can be decided: keep trying.
        if (this.ports.limits.config === undefined)
          this.opts.clock.after(this.opts.reportIntervalMs * 5, () => this.refreshLimits());
        return;
      }
      const address = candidates[i]!;
      this.opts.transport.limits(address, known, this.opts.reportTimeoutMs, (err, limits) => {
        if (err !== undefined || limits === undefined) return ask(i + 1);
        this.limitsAsking = false;
        if (limits.unchanged) return;
        try {
          this.setConfig(compileSources(limits.sources, { mergeDomains: limits.mergeDomains === true }));
        } catch (e) {
          this.opts.logger.warn(
            { server: address, err: (e as Error).message },
            "limits from server do not compile",
          );
        }
      });
    };
    ask(0);
  }

  /** Stops asking; whoever waits for readiness is told the limiter closed. */
  close(): void {
    this.closed = true;
    for (const w of this.readyWaiters.splice(0)) w.reject(new NotReadyError("the limiter was closed"));
  }
}
