import { type Policy, PolicyKind } from "./policy.js";

/**
 * A gateway's local view of one key in batched mode: the owner's latest policy and the counts
 * since the last report. `decide` is what runs on every request: no I/O, a few comparisons.
 */
export class LocalKey {
  kind: PolicyKind | 0 = 0;
  /** GRANT / REJECT_FRACTION: units left to admit; admission needs a positive balance, so the last
   * request may overdraw it (a large cost is not starved by a small grant; the owner charges it). */
  units = 0;
  fraction = 0;
  until = 0;
  /** Units a key with no valid policy may still admit (optimistic allowance). */
  allowance: number;
  admitted = 0;
  rejected = 0;
  /** Units admitted since the policy now in force was asked for, to charge against the next one. */
  sinceAsked = 0;

  constructor(allowance: number) {
    this.allowance = allowance;
  }

  /** Admits or rejects `cost` units at `now`. `random` in [0, 1) drives REJECT_FRACTION. */
  decide(cost: number, now: number, random: number): boolean {
    let ok: boolean;
    if (this.kind === 0 || now >= this.until) {
      ok = this.allowance > 0;
      if (ok) this.allowance -= cost;
    } else if (this.kind === PolicyKind.ALLOW) {
      ok = true;
    } else if (this.kind === PolicyKind.GRANT) {
      ok = this.units > 0;
      if (ok) this.units -= cost;
    } else if (this.kind === PolicyKind.REJECT_FRACTION) {
      ok = this.units > 0 && random >= this.fraction;
      if (ok) this.units -= cost;
    } else {
      ok = false; // REJECT_UNTIL
    }
    if (ok) {
      this.admitted += cost;
      this.sinceAsked += cost;
    } else this.rejected += cost;
    return ok;
  }

  /** Takes the counts for a report; what was admitted from here on belongs to the next one. */
  drain(): { admitted: number; rejected: number } {
    const out = { admitted: this.admitted, rejected: this.rejected };
    this.admitted = 0;
    this.rejected = 0;
    this.sinceAsked = 0;
    return out;
  }

  /**
   * Installs the owner's answer to a report. Units admitted while the report was in flight were
   * taken from the old policy but will be charged in the next report, so they come off the grant.
   */
  apply(p: Policy): void {
    this.kind = p.kind;
    this.fraction = p.fraction;
    this.until = p.until;
    this.units = p.units - this.sinceAsked;
  }
}
