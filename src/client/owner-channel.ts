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
    /** Where sequence numbers start: time-based, so a restarted gateway never reuses one. */
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

  nextSeq(): number {
    return ++this.seq;
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
  markAnswered(keyEpoch: number, incarnation: string): Answered {
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
