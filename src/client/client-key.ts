import type { LimitRule } from "../config/types.js";
import { windowStart } from "../core/algorithms/types.js";
import { LocalKey } from "../core/local-decision.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import type { Fallback } from "./fallback.js";

/** Counts taken from a key into a report, kept until the owner says whether it applied them. */
export interface Drained {
  admitted: number;
  rejected: number;
}

/**
 * One counter as a gateway sees it: the owner's latest policy and the counts since the last
 * report (LocalKey), plus what routing, re-sending and fallback need. Several request keys may
 * share one (a `share_threshold` wildcard counts all its values together).
 */
export class ClientKey extends LocalKey {
  /** Where its slice lives: the hash point of the shard key. */
  readonly point: number;
  lastUsed = 0;
  /** Waiting in the limiter's list of keys to report. */
  dirty = false;
  /** Units of settled over-estimates, taken off the next report. */
  refund = 0;
  /** Concurrency: units held now. */
  held = 0;
  /** Start of the counting window `windowTotal` is for. */
  windowAt = Number.NEGATIVE_INFINITY;
  /** Units the owner(s) acknowledged in that window: what is re-sent to a new owner. */
  windowTotal = 0;
  /** The address, and that server's incarnation (process), its counts were last acknowledged by. */
  reportedTo = "";
  reportedInc = "";
  /** Set when a config change replaced this counter: late settles and answers go there. */
  replacedBy: ClientKey | undefined = undefined;
  /** Key handle from `handleAddress` in its key epoch `handleEpoch`. */
  handle = 0;
  handleAddress = "";
  handleEpoch = 0;
  /** As the owner last said. */
  gateways = 1;
  remaining = 0;
  resetAt = 0;
  /** When the policy in force arrived, and whether a fresh one was asked for early since. */
  appliedAt = Number.NEGATIVE_INFINITY;
  askedEarly = false;
  /** Units the policy in force granted when it arrived. */
  granted = 0;
  /** Set while its owner cannot be reached. */
  fallback: Fallback | undefined = undefined;

  constructor(
    /** The key reports name: the counter key. */
    readonly key: string,
    /** Swapped for an equal rule of a new config; a changed rule makes a new ClientKey. */
    public rule: LimitRule,
    point: number,
  ) {
    super(rule.localAllowance);
    this.point = point;
  }

  /**
   * Admits under the policy (or the allowance when none is valid). What is admitted under a
   * policy also comes off the allowance, which stands for this gateway's part of what the owner
   * said was left: spent once, whether before or after the policy runs out.
   */
  override decide(cost: number, now: number, random: number): boolean {
    const underPolicy = this.kind !== 0 && now < this.until;
    const ok = super.decide(cost, now, random);
    if (ok && underPolicy) this.allowance -= cost;
    return ok;
  }

  /** Starts a new counting window when `now` is past the current one. */
  roll(now: number): void {
    const start = windowStart(now, this.rule.windowMs);
    if (start !== this.windowAt) {
      this.windowAt = start;
      this.windowTotal = 0;
    }
  }

  /** Counts for a report, net of refunds; a refund larger than the counts waits for the next. */
  take(): Drained {
    const d = this.drain();
    if (this.refund > 0) {
      const r = Math.min(this.refund, d.admitted);
      d.admitted -= r;
      this.refund -= r;
    }
    return d;
  }

  /** Puts back counts an owner did not apply, for the next report. */
  restore(d: Drained): void {
    this.admitted += d.admitted;
    this.rejected += d.rejected;
  }

  /**
   * The owner applied `d` (or may have: it is then counted in the window total to re-send), and
   * holds this key's window from `incarnation` on ("" when that is not known to be so).
   */
  acknowledged(d: Drained, address: string, incarnation: string, now: number): void {
    this.roll(now);
    this.windowTotal += d.admitted;
    this.reportedTo = address;
    this.reportedInc = incarnation;
  }

  /** This counter, or what replaced it after a config change. */
  current(): ClientKey {
    let k: ClientKey = this;
    while (k.replacedBy !== undefined) k = k.replacedBy;
    return k;
  }

  applyPolicy(p: Policy, gateways: number, now: number): void {
    this.apply(p);
    this.granted = this.units;
    this.appliedAt = now;
    this.askedEarly = false;
    // After this policy expires, until the next answer: the optimistic allowance, or this
    // gateway's part of what the owner says is left, whichever is more. Strict keys get nothing.
    const local = this.rule.localAllowance;
    const rejecting = p.kind === PolicyKind.REJECT_UNTIL || p.kind === PolicyKind.REJECT_FRACTION;
    this.allowance = local === 0 || rejecting ? local : Math.max(local, p.remaining / Math.max(1, gateways));
    this.gateways = gateways;
    this.remaining = p.remaining;
    this.resetAt = p.resetAt;
    this.fallback = undefined;
  }
}
