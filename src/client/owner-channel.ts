import { SEQ_WINDOW } from "../core/dedup.js";
import type { ReportRequest } from "../protocol/messages.js";
import type { ClientKey, Drained } from "./client-key.js";

/** One report on its way to an owner, with what each entry took from its key. */
export interface PendingReport {
  readonly req: ReportRequest;
  readonly keys: readonly ClientKey[];
  readonly drained: readonly Drained[];
  /** Per entry: whether it carried the key's window total. */
  readonly resent: readonly boolean[];
  /** The owner's incarnation as known when the report was built. */
  readonly incarnation: string;
  attempts: number;
}

/** What an answer told about its owner, for the reporter to act on. */
export interface Answered {
  /** The owner had failed before this answer. */
  readonly recovered: boolean;
  /** Key handles given out before are still valid (same key epoch). */
  readonly handlesValid: boolean;
  /** The owner's process changed since its previous answer (not on the first). */
  readonly restarted: boolean;
}

/**
 * The reporting state towards one server. At most one report is in flight: while it is, counts
 * keep accumulating in the keys and travel merged in the next one, so a slow owner sees fewer,
 * larger reports rather than a queue. A report that failed is sent again unchanged (same seq),
 * since the owner may have applied it: the dedup window then answers it as a duplicate.
 */
export class OwnerChannel {
  /** Per-owner sequence numbers: each owner's dedup window sees a dense series. */
  private seq: number;
  /** Reports answered too old in a row: each one jumps the sequence twice as far as the last. */
  private tooOldStreak = 0;
  #keyEpoch = 0;
  /** The owner process's incarnation from its last answer ("" before the first). */
  #incarnation = "";
  private inflight: PendingReport | undefined = undefined;
  private failed: PendingReport | undefined = undefined;
  /** Consecutive failed calls; 0 after any answer. */
  #failures = 0;
  #lastError = "";
  /** An early report found this owner busy: send one as soon as the answer is in. */
  private wantSoon = false;
  /** When the last new report was built: its successor's counts cover the time since. */
  private lastBuiltAt = Number.NaN;

  constructor(
    readonly address: string,
    /**
     * Where sequence numbers start: above any this process used towards any owner (a channel made
     * again for an owner that left and came back), and time-based. The wire client id carries a
     * per-process part, so another process never shares this series whatever its clock says.
     */
    seqBase: number,
  ) {
    this.seq = Math.max(0, Math.floor(seqBase));
  }

  get keyEpoch(): number {
    return this.#keyEpoch;
  }
  get incarnation(): string {
    return this.#incarnation;
  }
  get failures(): number {
    return this.#failures;
  }
  get lastError(): string {
    return this.#lastError;
  }

  get down(): boolean {
    return this.#failures > 0;
  }

  /** A report is in flight, or a failed one waits to be sent again before any new one. */
  get busy(): boolean {
    return this.inflight !== undefined || this.failed !== undefined;
  }

  /** The last sequence number handed out. */
  get lastSeq(): number {
    return this.seq;
  }

  nextSeq(): number {
    return ++this.seq;
  }

  /**
   * The owner answered a report too old: it has seen numbers of this client id far above ours
   * (another process under the same id, say). Nothing of that report was applied; its counts go
   * again under numbers past the owner's window. The owner does not say how far it is, so the
   * jump doubles with each too-old answer in a row (from twice the window): an hour of the old
   * time-based numbers (3.6e9) is crossed in about 26 round trips. Returns the too-old answers
   * in a row before this one.
   */
  rebase(): number {
    const jump = 2 * SEQ_WINDOW * 2 ** Math.min(this.tooOldStreak, 46);
    this.seq = Math.min(Number.MAX_SAFE_INTEGER - 1e9, this.seq + jump);
    return this.tooOldStreak++;
  }

  /** The span a new report's counts cover (`fallbackMs` for the first), clamped to 1 ms..60 s. */
  nextSpan(now: number, fallbackMs: number): number {
    const span = Number.isNaN(this.lastBuiltAt)
      ? fallbackMs
      : Math.min(60_000, Math.max(1, Math.round(now - this.lastBuiltAt)));
    this.lastBuiltAt = now;
    return span;
  }

  /** Asks for a report as soon as the one in flight is answered. */
  wantReportSoon(): void {
    this.wantSoon = true;
  }

  /** Whether a report was asked for while busy; clears the request. */
  takeWantSoon(): boolean {
    const w = this.wantSoon;
    this.wantSoon = false;
    return w;
  }

  /** The failed report, to send again, once nothing is in flight. */
  takeRetry(): PendingReport | undefined {
    const f = this.failed;
    if (f === undefined || this.inflight !== undefined) return undefined;
    this.failed = undefined;
    return f;
  }

  /** `p` goes out now. */
  sent(p: PendingReport): void {
    this.inflight = p;
    p.attempts++;
  }

  /** `p` came back (answer or error): false if it no longer counts (the owner was dropped). */
  settled(p: PendingReport): boolean {
    if (this.inflight !== p) return false;
    this.inflight = undefined;
    return true;
  }

  /** `p` failed and waits to be sent again; returns the consecutive failures so far. */
  markFailed(p: PendingReport, error: string): number {
    this.#failures++;
    this.#lastError = error;
    this.failed = p;
    return this.#failures;
  }

  /** An answer came, in `keyEpoch` from process `incarnation`. */
  markAnswered(keyEpoch: number, incarnation: string, tooOld = false): Answered {
    if (!tooOld) this.tooOldStreak = 0;
    const recovered = this.#failures > 0;
    this.#failures = 0;
    const handlesValid = keyEpoch === this.#keyEpoch;
    this.#keyEpoch = keyEpoch;
    const restarted = incarnation !== this.#incarnation && this.#incarnation !== "";
    this.#incarnation = incarnation;
    return { recovered, handlesValid, restarted };
  }

  /** The owner left the cluster: returns what was in flight or failed, and forgets it. */
  abandon(): PendingReport[] {
    const out: PendingReport[] = [];
    if (this.inflight !== undefined) out.push(this.inflight);
    if (this.failed !== undefined) out.push(this.failed);
    this.inflight = undefined;
    this.failed = undefined;
    return out;
  }
}
