import type { Etcd3 } from "etcd3";
import { type ConfigDiff, diffConfigs, LimitRemovalError, removalProblems } from "../config/diff.js";
import { compileSources } from "../config/load.js";
import { liveOverrides, overridesSource } from "../config/overrides.js";
import type { ConfigSource, LimitConfig } from "../config/types.js";
import type { Clock, Timer } from "../core/clock.js";
import { limitsPrefix, limitsState } from "./limits-store.js";
import type { Log } from "./log.js";
import { PrefixView } from "./prefix-view.js";

/** What a server publishes about the limits it serves (its membership record, `/readyz`). */
export interface LimitsInForce {
  /** The pushed version in force. */
  version: number;
  /** The config's version (digest), overrides included: what gateways compare. */
  digest: string;
  /** A later pushed version this server could not load: it keeps serving `version`. */
  refused?: { version: number; error: string };
}

export interface EtcdLimitsOptions {
  client: Etcd3;
  prefix: string;
  clock: Clock;
  log: Log;
  /** Apply versions that remove a domain or rule (refused otherwise, as file reloads are). */
  allowRemoval: boolean;
  /** Each config to serve: the first, and every later one that loaded. */
  onSwap: (config: LimitConfig, diff: ConfigDiff | undefined, state: LimitsInForce) => void;
  /** A version was refused (or a refusal cleared by a later one); the old config keeps serving. */
  onRefused: (state: LimitsInForce, err: Error) => void;
}

/**
 * Limits from etcd (`--limits-from etcd`): mirrors `<prefix>limits/` and, whenever the head or the
 * overrides change, compiles the head's files plus the overrides in force and swaps them in.
 * Every server does this on its own watch event, so "together" means within the spread of watch
 * delivery and one compile (measured in bench/RESULTS.md §15), not at an agreed instant: a
 * scheduled switch would add its lead time to every push, and a server lagging past it would
 * still switch late. Overrides with an expiry are dropped at `expiresAt` on the injected clock
 * (a timer for the earliest), without waiting for etcd's lease to delete them.
 */
export class EtcdLimitsSource {
  private readonly view: PrefixView;
  private config: LimitConfig | undefined;
  private state: LimitsInForce | undefined;
  /** Head version + overrides text last compiled, so unrelated changes (history) cost nothing. */
  private lastInput = "";
  /** The files of the version in force (history may drop it; overrides still apply to it). */
  private inForceSources: readonly ConfigSource[] | undefined;
  private expiry: Timer | undefined;
  private firstProblem: Error | undefined;
  private stopped = false;

  constructor(private readonly opts: EtcdLimitsOptions) {
    this.view = new PrefixView({
      client: opts.client,
      prefix: limitsPrefix(opts.prefix),
      clock: opts.clock,
      log: opts.log,
      onChange: () => this.evaluate(),
    });
  }

  /** Reads etcd once; throws when there is nothing loadable to serve (no push yet, or invalid). */
  async start(): Promise<LimitConfig> {
    await this.view.start();
    if (this.config === undefined) {
      await this.view.stop();
      throw (
        this.firstProblem ??
        new Error(
          `no limits in etcd under ${limitsPrefix(this.opts.prefix)}: push a config with \`shardlimit limits push\``,
        )
      );
    }
    return this.config;
  }

  get inForce(): LimitsInForce | undefined {
    return this.state;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.expiry?.cancel();
    await this.view.stop();
  }

  private evaluate(): void {
    if (this.stopped) return;
    const { clock, log } = this.opts;
    const s = limitsState(this.view.current, { history: false });
    for (const p of s.problems) log.warn({ problem: p }, "limits in etcd: record ignored");
    const now = clock.now();
    const live = liveOverrides(s.overrides, now);
    this.scheduleExpiry(live, now);
    const overrides = overridesSource(live);
    const head = s.current ?? s.head;
    const input = `${head?.version ?? 0}\0${overrides.text}`;
    if (head === undefined || input === this.lastInput) return;
    this.lastInput = input;
    const next =
      s.current === undefined
        ? new Error(`version ${head.version} is missing`)
        : this.compile(s.current.sources, overrides);
    if (!(next instanceof Error)) {
      this.apply(head.version, s.current!.sources, next);
      return;
    }
    this.refuse(head.version, next);
    // Still the overrides: on the version in force, as every server that loaded nothing new does.
    if (this.inForceSources === undefined || this.state === undefined) return;
    const fallback = this.compile(this.inForceSources, overrides);
    if (!(fallback instanceof Error) && fallback.version !== this.config?.version) {
      this.apply(this.state.version, this.inForceSources, fallback);
    }
  }

  /** The config of `sources` and `overrides`, or why it cannot replace the one in force. */
  private compile(sources: readonly ConfigSource[], overrides: ConfigSource): LimitConfig | Error {
    let config: LimitConfig;
    try {
      config = compileSources([...sources, overrides]);
    } catch (err) {
      return err as Error;
    }
    const prev = this.config;
    if (prev && !this.opts.allowRemoval) {
      const problems = removalProblems(prev, diffConfigs(prev, config));
      if (problems.length > 0) return new LimitRemovalError(problems);
    }
    return config;
  }

  private apply(version: number, sources: readonly ConfigSource[], config: LimitConfig): void {
    const prev = this.config;
    const refused = this.state?.refused;
    this.config = config;
    this.inForceSources = sources;
    // A refusal stands while the version in force is older than the refused one.
    this.state = {
      version,
      digest: config.version,
      ...(refused && refused.version > version ? { refused } : {}),
    };
    this.opts.onSwap(config, prev && diffConfigs(prev, config), this.state);
  }

  private refuse(version: number, err: Error): void {
    if (this.config === undefined) {
      this.firstProblem = err;
      return;
    }
    this.state = { ...this.state!, refused: { version, error: err.message.slice(0, 4000) } };
    this.opts.onRefused(this.state, err);
  }

  private scheduleExpiry(live: readonly { expiresAt?: number }[], now: number): void {
    this.expiry?.cancel();
    this.expiry = undefined;
    const next = Math.min(...live.map((o) => o.expiresAt ?? Number.POSITIVE_INFINITY));
    if (!Number.isFinite(next)) return;
    this.expiry = this.opts.clock.after(Math.max(0, next - now), () => {
      this.expiry = undefined;
      this.evaluate();
    });
  }
}
