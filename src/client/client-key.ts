import { DEFAULT_PRIORITY, type LimitRule, type Priority } from "../config/types.js";
import { windowStart } from "../core/algorithms/types.js";
import { LocalKey } from "../core/local-decision.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import { CostPredictor } from "./cost-predictor.js";
import { Fallback } from "./fallback.js";

/** Counts taken from a key into a report, kept until the owner says whether it applied them. */
export interface Drained {
  admitted: number;
  rejected: number;
  /** Units given back by settled tickets (the report's `refunded`). */
  refunded: number;
}

/**
 * One counter as a gateway sees it: the owner's latest policy and the counts since the last
 * report (LocalKey), plus what routing, re-sending and fallback need. Several request keys may
 * share one (a `share_threshold` wildcard counts all its values together). Its state changes
 * only through its own methods; the limiter's parts read it.
 */
export class ClientKey extends LocalKey {
  /** Where its slice lives: the hash point of the shard key. */
  readonly point: number;
  #rule: LimitRule;
  #lastUsed = 0;
  /** Waiting in the limiter's list of keys to report. */
  #dirty = false;
  /**
   * Units of settled over-estimates in the current window, sent as the next report's `refunded`
   * (whatever else it carries, or nothing): the owner gives them back once.
   */
  private refund = 0;
  /** Concurrency: units held now. */
  #held = 0;
  /** Start of the counting window `windowTotal` is for. */
  private windowAt = Number.NEGATIVE_INFINITY;
  /** Units the owner(s) acknowledged in that window: what is re-sent to a new owner. */
  #windowTotal = 0;
  /** The address, and that server's incarnation (process), its counts were last acknowledged by. */
  private reportedTo = "";
  private reportedInc = "";
  /** Set when a config change replaced this counter: late settles and answers go there. */
  private replacedBy: ClientKey | undefined = undefined;
  /** Key handle from `handleAddress` in its key epoch `handleEpoch`. */
  private handle = 0;
  private handleAddress = "";
  private handleEpoch = 0;
  /** As the owner last said. */
  private gateways = 1;
  #remaining = 0;
  #resetAt = 0;
  /** When the policy in force arrived, and whether a fresh one was asked for early since. */
  private appliedAt = Number.NEGATIVE_INFINITY;
  private askedEarly = false;
  /** Units the policy in force granted when it arrived. */
  private granted = 0;
  /** Set while its owner cannot be reached. */
  private fallback: Fallback | undefined = undefined;
  /**
   * Units admitted here that sit in reports sent and not yet answered (applied or not: unknown).
   * They came out of this window's share, so a fallback share must not hand them out again.
   */
  private unanswered = 0;
  /** What its next request is predicted to cost, from the costs settled so far (`begin`). */
  #cost: CostPredictor;
  /** The owner's latest policy as it arrived (before what was admitted meanwhile came off it). */
  #lastPolicy: Policy | undefined = undefined;
  /** The limit the owner last said it divides, when below the rule's (a region's share of a global limit). */
  #ownerLimit: number | undefined = undefined;

  constructor(
    /** The key reports name: the counter key. */
    readonly key: string,
    /** Swapped for an equal rule of a new config (`adoptRule`); a changed rule makes a new ClientKey. */
    rule: LimitRule,
    point: number,
    /** The class its key's `priority` entry named (the host guard sheds by it). */
    readonly priority: Priority = DEFAULT_PRIORITY,
  ) {
    super(rule.localAllowance);
    this.#rule = rule;
    this.point = point;
    this.#cost = CostPredictor.forRule(rule);
  }

  get cost(): CostPredictor {
    return this.#cost;
  }

  get rule(): LimitRule {
    return this.#rule;
  }
  get lastUsed(): number {
    return this.#lastUsed;
  }
  get dirty(): boolean {
    return this.#dirty;
  }
  get held(): number {
    return this.#held;
  }
  get windowTotal(): number {
    return this.#windowTotal;
  }
  /** Cluster-wide units left, and when the counter is full again, as of the owner's last answer. */
  get remaining(): number {
    return this.#remaining;
  }
  get resetAt(): number {
    return this.#resetAt;
  }
  get inFallback(): boolean {
    return this.fallback !== undefined;
  }

  /** In fallback: this gateway's share per window and what is left of it (`inspect`). */
  get fallbackShare(): { perWindow: number; left: number; gateways: number } | undefined {
    const f = this.fallback;
    return f === undefined ? undefined : { perWindow: f.perWindow, left: f.left, gateways: this.gateways };
  }

  /** Units the policy in force granted when it arrived. */
  get grantedUnits(): number {
    return this.granted;
  }
  /** Units of settled tickets waiting to be refunded by the next report. */
  get pendingRefund(): number {
    return this.refund;
  }

  touch(now: number): void {
    this.#lastUsed = now;
  }

  /** Puts the key on the list to report; false if it already was. */
  markDirty(): boolean {
    if (this.#dirty) return false;
    this.#dirty = true;
    return true;
  }

  clearDirty(): void {
    this.#dirty = false;
  }

  /** Nothing to report and nothing held: the key may be forgotten. */
  get idle(): boolean {
    return (
      !this.#dirty && this.admitted === 0 && this.rejected === 0 && this.#held === 0 && this.refund === 0
    );
  }

  /** Whether a policy from the owner is in force (otherwise the allowance applies). */
  hasPolicy(now: number): boolean {
    this.expireIfStepped(now);
    return this.kind !== 0 && now < this.until;
  }

  /**
   * A policy lasts a few intervals from its arrival by the wall clock (windows need wall time);
   * a wall clock stepped back before that arrival would keep it, an ALLOW included, for as long
   * as the step: it ends instead, and the next answer brings a fresh one.
   */
  private expireIfStepped(now: number): void {
    if (now < this.appliedAt) {
      this.until = now;
      this.appliedAt = now;
    }
  }

  /** Counts a decision made without the policy (shadow mode, a cost over the limit). */
  tally(ok: boolean, cost: number): boolean {
    if (ok) {
      this.admitted += cost;
      // Not in the report the next policy answers: charged against that policy's grant.
      this.sinceAsked += cost;
    } else this.rejected += cost;
    return ok;
  }

  /**
   * Admits under the policy (or the allowance when none is valid). What is admitted under a
   * policy also comes off the allowance, which stands for this gateway's part of what the owner
   * said was left: spent once, whether before or after the policy runs out.
   */
  override decide(cost: number, now: number, random: number): boolean {
    this.expireIfStepped(now);
    const underPolicy = this.kind !== 0 && now < this.until;
    const ok = super.decide(cost, now, random);
    if (ok && underPolicy) this.allowance -= cost;
    return ok;
  }

  /** Decides under the fallback share; only while `inFallback`. `random` in [0, 1). */
  decideFallback(cost: number, now: number, random: number): boolean {
    return this.tally(this.fallback!.take(cost, now, random), cost);
  }

  /**
   * Whether this key's demand has clearly moved since its policy was made, so a fresh one should
   * be asked for now instead of at the next interval; true once per policy:
   * - its grant (GRANT, not a paced REJECT_FRACTION) ran out within half an interval: load moved
   *   here;
   * - it was rationed (REJECT_FRACTION) but uses under a quarter of its pace: load moved away,
   *   and its unused share should go to where it went.
   */
  askEarly(ok: boolean, now: number, interval: number): boolean {
    if (this.askedEarly || !this.demandMoved(ok, now, interval)) return false;
    this.askedEarly = true;
    return true;
  }

  private demandMoved(ok: boolean, now: number, interval: number): boolean {
    const elapsed = now - this.appliedAt;
    // A paced key (REJECT_FRACTION) runs out of its grant by design: asking again early would
    // only get it a second interval's grant within one.
    if (!ok) return this.kind === PolicyKind.GRANT && this.units <= 0 && elapsed < interval / 2;
    if (this.kind !== PolicyKind.REJECT_FRACTION || elapsed < interval / 4 || elapsed > interval)
      return false;
    const used = this.granted - this.units;
    return used < (0.25 * this.granted * elapsed) / interval;
  }

  /** Concurrency: takes `amount` slots if this gateway's share allows. */
  acquire(amount: number, now: number): boolean {
    const noPolicy = !this.hasPolicy(now);
    let max: number;
    if (this.fallback !== undefined) max = this.fallback.maxHeld;
    else if (noPolicy) max = this.#held + this.allowance;
    else max = this.units;
    const ok = this.#held + amount <= max || (this.kind === PolicyKind.ALLOW && now < this.until);
    if (ok) {
      this.#held += amount;
      this.admitted += amount;
      if (noPolicy) this.allowance -= amount;
    } else this.rejected += amount;
    return ok;
  }

  release(amount: number): void {
    this.#held = Math.max(0, this.#held - amount);
  }

  /**
   * Charges `delta` more than was estimated, or refunds it when negative. `reservedIn` is the
   * window the estimate was counted in (`windowStart` of the reservation): a windowed limit's
   * refund for a window that has ended is dropped, as that window's count is over and giving it
   * back now would add capacity to the current one. A token bucket takes any refund (its owner
   * caps the balance at the burst).
   */
  settle(delta: number, reservedIn: number, now: number): void {
    if (delta > 0) {
      this.admitted += delta;
      this.sinceAsked += delta;
      this.units -= delta;
      return;
    }
    if (delta === 0) return;
    if (this.windowed && windowStart(now, this.#rule.windowMs) !== reservedIn) return;
    this.roll(now);
    this.refund -= delta;
  }

  private get windowed(): boolean {
    return this.#rule.algorithm !== "token_bucket";
  }

  /**
   * Starts a new counting window when `now` is past the current one; refunds still waiting for
   * the old one (windowed limits) are dropped with it.
   */
  roll(now: number): void {
    const start = windowStart(now, this.#rule.windowMs);
    if (start !== this.windowAt) {
      this.windowAt = start;
      this.#windowTotal = 0;
      if (this.windowed) this.refund = 0;
    }
  }

  /** Counts for a report, with the refunds waiting (sent apart: they need no admissions to ride on). */
  take(): Drained {
    const d: Drained = { ...this.drain(), refunded: this.refund };
    this.refund = 0;
    this.unanswered += d.admitted;
    return d;
  }

  /** Puts back counts an owner did not apply, for the next report. */
  restore(d: Drained): void {
    this.answered(d);
    this.admitted += d.admitted;
    this.rejected += d.rejected;
    this.refund += d.refunded;
  }

  /** The counts of `d` were refused for good (the owner found the key invalid): dropped. */
  dropped(d: Drained): void {
    this.answered(d);
  }

  private answered(d: Drained): void {
    this.unanswered = Math.max(0, this.unanswered - d.admitted);
  }

  /**
   * Whether a report to `address` (whose process is `incarnation`) must carry the window total:
   * a new owner, or a restarted one (both start empty, unless counters were handed over).
   */
  needsWindowTotal(address: string, incarnation: string): boolean {
    return this.reportedTo !== address || this.reportedInc !== incarnation || incarnation === "";
  }

  /**
   * The owner applied `d` (or may have: it is then counted in the window total to re-send), and
   * holds this key's window from `incarnation` on ("" when that is not known to be so).
   */
  acknowledged(d: Drained, address: string, incarnation: string, now: number): void {
    this.answered(d);
    this.roll(now);
    // Net of refunds: a new owner rebuilds the window from what this gateway really used.
    this.#windowTotal = Math.max(0, this.#windowTotal + d.admitted - d.refunded);
    this.reportedTo = address;
    this.reportedInc = incarnation;
  }

  /** The handle to name this key by in a report to `address` in key epoch `epoch`; 0: by name. */
  handleFor(address: string, epoch: number): number {
    return this.handleAddress === address && this.handleEpoch === epoch ? this.handle : 0;
  }

  acceptHandle(handle: number, address: string, epoch: number): void {
    this.handle = handle;
    this.handleAddress = address;
    this.handleEpoch = epoch;
  }

  forgetHandle(): void {
    this.handle = 0;
  }

  /** The owner at `address` began a new key epoch: handles it gave out before are void. */
  forgetHandleFrom(address: string): void {
    if (this.handleAddress === address) this.handle = 0;
  }

  /** This counter, or what replaced it after a config change. */
  current(): ClientKey {
    let k: ClientKey = this;
    while (k.replacedBy !== undefined) k = k.replacedBy;
    return k;
  }

  /** A reload left this key's limit as it was: keep the policy in force under the new rule. */
  adoptRule(rule: LimitRule): void {
    this.#rule = rule;
  }

  /** A reload changed this key's limit: `next` takes over its counts and what was reported. */
  replaceWith(next: ClientKey): void {
    next.admitted = this.admitted;
    next.rejected = this.rejected;
    next.#held = this.#held;
    next.refund = this.refund;
    next.reportedTo = this.reportedTo;
    next.reportedInc = this.reportedInc;
    next.windowAt = this.windowAt;
    next.#windowTotal = this.#windowTotal;
    next.unanswered = this.unanswered;
    // What requests measured outlives a changed limit; the new prior would know less.
    if (this.#cost.seen > 0) next.#cost = this.#cost;
    this.replacedBy = next;
  }

  /**
   * The limit a fallback share is cut from: the rule's, or the smaller one its owner last said it
   * divides (a region's share of a global limit: the region's gateways must not share out the
   * whole global limit when they lose their owner), with the burst scaled alike.
   */
  private fallbackRule(): LimitRule {
    const r = this.#rule;
    const l = this.#ownerLimit;
    return l === undefined ? r : { ...r, limit: l, burst: (r.burst * l) / r.limit };
  }

  /** The owner is unreachable: decide on this gateway's share of the limit from now on. */
  enterFallback(now: number): void {
    this.roll(now);
    this.fallback = new Fallback(
      this.fallbackRule(),
      this.gateways,
      this.#remaining,
      this.#windowTotal + this.admitted + this.unanswered,
      this.admitted + this.unanswered,
      now,
      this.#resetAt,
    );
  }

  /** The owner's latest policy as it arrived, when it did, and how many gateways report the key. */
  get lastPolicy(): { policy: Policy; at: number; gateways: number } | undefined {
    const p = this.#lastPolicy;
    return p === undefined ? undefined : { policy: p, at: this.appliedAt, gateways: this.gateways };
  }

  applyPolicy(p: Policy, gateways: number, now: number, limit?: number): void {
    this.#lastPolicy = p;
    this.#ownerLimit = limit !== undefined && limit > 0 && limit < this.#rule.limit ? limit : undefined;
    this.apply(p);
    this.granted = this.units;
    this.appliedAt = now;
    this.askedEarly = false;
    // After this policy expires, until the next answer: the optimistic allowance, or this
    // gateway's part of what the owner says is left, whichever is more. Strict keys get nothing.
    const local = this.#rule.localAllowance;
    const rejecting = p.kind === PolicyKind.REJECT_UNTIL || p.kind === PolicyKind.REJECT_FRACTION;
    this.allowance = local === 0 || rejecting ? local : Math.max(local, p.remaining / Math.max(1, gateways));
    this.gateways = gateways;
    this.#remaining = p.remaining;
    this.#resetAt = p.resetAt;
    this.fallback = undefined;
  }
}
