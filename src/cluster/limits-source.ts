import type { Etcd3 } from "etcd3";
import { type ConfigDiff, diffConfigs, LimitRemovalError, removalProblems } from "../config/diff.js";
import { compileSources } from "../config/load.js";
import { liveOverrides, overridesSource } from "../config/overrides.js";
import type { ConfigSource, LimitConfig } from "../config/types.js";
import type { Clock, Timer } from "../core/clock.js";
import { activateStaged, type LimitsState, limitsPrefix, limitsState } from "./limits-store.js";
import type { Log } from "./log.js";
import { type MemberRecord, membersPrefix, parseMembers } from "./membership.js";
import { PrefixView } from "./prefix-view.js";

/** What a server publishes about the limits it serves (its membership record, `/readyz`). */
export interface LimitsInForce {
  /** The pushed version in force. */
  version: number;
  /** The config's version (digest), overrides included: what gateways compare. */
  digest: string;
  /** A later pushed version this server could not load: it keeps serving `version`. */
  refused?: { version: number; error: string };
  /** This server's answer to the staged version: loaded (ready to switch), or why it cannot. */
  staged?: { version: number; error?: string };
  /** Always set by this version: it answers staged versions (older servers switch on the head only). */
  staging?: true;
}

/**
 * The registered members that answer staged versions and switch them on. Servers of an older
 * version (no `staging`) are not waited for: they switch on the head write as they always did.
 */
export function stagingMembers(members: readonly MemberRecord[]): MemberRecord[] {
  return members.filter((m) => (m.limits?.version ?? 0) > 0 && m.limits?.staging === true);
}

/** How long the switching member waits for every member's answer to a staged version. */
export const STAGE_WAIT_MS = 2000;
/** Wait before trying the switching write again after etcd refused or could not be reached. */
const RETRY_MS = 250;

export interface EtcdLimitsOptions {
  client: Etcd3;
  prefix: string;
  clock: Clock;
  log: Log;
  /** This server's member id: the lowest id among members serving limits from etcd switches. */
  selfId: string;
  /** Longest wait for the members' answers before switching without the missing ones. */
  stageWaitMs?: number;
  /** Apply versions that remove a domain or rule (refused otherwise, as file reloads are). */
  allowRemoval: boolean;
  /** Each config to serve: the first, and every later one that loaded. */
  onSwap: (config: LimitConfig, diff: ConfigDiff | undefined, state: LimitsInForce) => void;
  /** A version was refused (or a refusal cleared by a later one); the old config keeps serving. */
  onRefused: (state: LimitsInForce, err: Error) => void;
  /** This server's answer to a staged version changed (to publish it in its membership record). */
  onStaged: (state: LimitsInForce) => void;
}

/**
 * Limits from etcd (`--limits-from etcd`): mirrors `<prefix>limits/` and `<prefix>members/`.
 *
 * Servers switch to a pushed version together, in two phases. A push stages the version
 * (`limits/staged`). Every server loads it (compiles it with the overrides in force, checks it may
 * replace its config) and answers in its membership record, which is bound to its lease:
 * `staged: {version}` when ready, with `error` when it cannot load it. Once every member serving
 * limits from etcd has answered, any of them that sees it makes the version the head, in one
 * transaction guarded by the staged record and the head it saw (the first wins; the others find
 * the record gone); without every answer, the member with the lowest id does so STAGE_WAIT_MS
 * after it saw the staged record. Every server switches on that single write, to the config it
 * compiled in phase one (no compile on the switch); a server that could not load it keeps the old
 * one and says so (`refused`). The switching is the servers' own, not the pusher's: a pusher
 * killed after staging leaves nothing undone, and when the lowest-id member dies its record goes
 * with its lease, so the next one (which has seen the same staged record) waits in its place.
 * A push with no such member registered makes the head at once (limits-store.ts).
 *
 * The head or the overrides changing recompiles as before (overrides apply on each server's own
 * watch, within the spread of watch delivery). Overrides with an expiry are dropped at `expiresAt`
 * on the injected clock (a timer for the earliest), without waiting for etcd's lease to delete them.
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
  /** The staged version compiled in phase one, for the input (version + overrides) it was compiled for. */
  private prepared: { input: string; base: string | undefined; result: LimitConfig | Error } | undefined;
  private readonly members: PrefixView;
  /** Switching member: the staged record it waits for answers to, and the bound on that wait. */
  private waiting: { text: string; timer: Timer } | undefined;
  private activating = false;

  constructor(private readonly opts: EtcdLimitsOptions) {
    this.view = new PrefixView({
      client: opts.client,
      prefix: limitsPrefix(opts.prefix),
      clock: opts.clock,
      log: opts.log,
      onChange: () => this.evaluate(),
    });
    this.members = new PrefixView({
      client: opts.client,
      prefix: membersPrefix(opts.prefix),
      clock: opts.clock,
      log: opts.log,
      onChange: () => this.coordinate(),
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
    await this.members.start();
    return this.config;
  }

  get inForce(): LimitsInForce | undefined {
    return this.state;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.expiry?.cancel();
    this.waiting?.timer.cancel();
    await Promise.all([this.view.stop(), this.members.stop()]);
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
    this.prepare(s, overrides);
    this.coordinate(s);
    const head = s.current ?? s.head;
    const input = `${head?.version ?? 0}\0${overrides.text}`;
    if (head === undefined || input === this.lastInput) return;
    this.lastInput = input;
    const prepared =
      this.prepared?.input === input && this.prepared.base === this.config?.version
        ? this.prepared.result
        : undefined;
    const next =
      prepared ??
      (s.current === undefined
        ? new Error(`version ${head.version} is missing`)
        : this.compile(s.current.sources, overrides));
    if (!(next instanceof Error)) {
      this.apply(head.version, s.current!.sources, next);
      // A server starting while a version is staged answers it too (nothing was in force before).
      this.prepare(s, overrides);
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

  /**
   * Phase one: compiles a staged version newer than the one in force (once per version, overrides
   * and config in force) and publishes the answer. Only with a config in force: a server still
   * starting switches to whatever the head is when it starts.
   */
  private prepare(s: LimitsState, overrides: ConfigSource): void {
    const staged = s.staged;
    const state = this.state;
    if (state === undefined) return;
    if (staged === undefined || staged.record.version <= state.version) {
      if (state.staged) {
        const { staged: _, ...rest } = state;
        this.state = rest;
      }
      return;
    }
    const input = `${staged.record.version}\0${overrides.text}`;
    const base = this.config?.version;
    if (this.prepared?.input === input && this.prepared.base === base && state.staged) return;
    const result =
      staged.version === undefined
        ? new Error(`version ${staged.record.version} is missing`)
        : this.compile(staged.version.sources, overrides);
    this.prepared = { input, base, result };
    const answer = {
      version: staged.record.version,
      ...(result instanceof Error ? { error: result.message.slice(0, 4000) } : {}),
    };
    if (state.staged?.version === answer.version && state.staged.error === answer.error) return;
    this.state = { ...state, staged: answer };
    this.opts.log.info(
      { stagedVersion: answer.version, ...(answer.error ? { err: answer.error } : {}) },
      answer.error ? "staged limits version cannot be loaded" : "staged limits version loaded",
    );
    this.opts.onStaged(this.state);
  }

  /**
   * Phase two: any member makes the staged version the head once every registered member serving
   * limits from etcd has answered; the lowest id among them also after the bounded wait.
   */
  private coordinate(s = limitsState(this.view.current, { history: false })): void {
    if (this.stopped) return;
    const staged = s.staged;
    if (staged === undefined || (this.waiting && this.waiting.text !== staged.text)) {
      this.waiting?.timer.cancel();
      this.waiting = undefined;
    }
    if (staged === undefined) return;
    const switching = stagingMembers(parseMembers(this.members.current, this.opts.log));
    const v = staged.record.version;
    // This server's own answer counts as soon as it has one, before its record says so.
    const answered = (m: MemberRecord) =>
      m.limits!.staged?.version === v ||
      m.limits!.version >= v ||
      (m.id === this.opts.selfId && this.state?.staged?.version === v);
    // Any member that sees every answer switches it on (the first transaction wins, the others
    // find the staged record gone): the switch waits for the quickest member, not one in particular.
    if (switching.length > 0 && switching.every(answered)) {
      this.activate(staged.text, switching);
      return;
    }
    // Without every answer, only the lowest id switches, after the bounded wait.
    if (switching[0]?.id !== this.opts.selfId) return;
    if (this.waiting) return;
    const wait = this.opts.stageWaitMs ?? STAGE_WAIT_MS;
    this.waiting = {
      text: staged.text,
      timer: this.opts.clock.after(wait, () => {
        this.waiting = undefined;
        const now = limitsState(this.view.current, { history: false }).staged;
        if (now?.text !== staged.text) return this.coordinate();
        const members = stagingMembers(parseMembers(this.members.current, this.opts.log));
        this.activate(staged.text, members);
      }),
    };
  }

  private activate(stagedText: string, members: readonly MemberRecord[]): void {
    if (this.activating) return;
    this.activating = true;
    const { client, prefix, log } = this.opts;
    const version = limitsState(this.view.current, { history: false }).staged?.record.version;
    const headText = this.view.current.get("head");
    const failed = members
      .filter((m) => m.limits?.staged?.version === version && m.limits?.staged?.error !== undefined)
      .map((m) => m.id);
    const silent = members
      .filter((m) => m.limits?.staged?.version !== version && (m.limits?.version ?? 0) < (version ?? 0))
      .map((m) => m.id);
    activateStaged(client, prefix, stagedText, headText)
      .then((done) => {
        if (done) {
          log.info(
            { limitsVersion: version, members: members.length, failed, noAnswer: silent },
            "staged limits version switched on",
          );
        }
      })
      .catch((err: Error) => {
        log.warn({ err: err.message }, "cannot switch the staged limits version on; retrying");
        this.opts.clock.after(RETRY_MS, () => this.coordinate());
      })
      .finally(() => {
        // A lost race (head or staged moved) is re-checked on the views' next change.
        this.activating = false;
      });
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
    const staged = this.state?.staged;
    // A refusal stands while the version in force is older than the refused one; so does an answer.
    this.state = {
      version,
      digest: config.version,
      ...(refused && refused.version > version ? { refused } : {}),
      ...(staged && staged.version > version ? { staged } : {}),
      staging: true,
    };
    this.opts.onSwap(config, prev && diffConfigs(prev, config), this.state);
  }

  private refuse(version: number, err: Error): void {
    if (this.config === undefined) {
      this.firstProblem = err;
      return;
    }
    const { staged, ...rest } = this.state!;
    this.state = {
      ...rest,
      refused: { version, error: err.message.slice(0, 4000) },
      ...(staged && staged.version > version ? { staged } : {}),
    };
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
