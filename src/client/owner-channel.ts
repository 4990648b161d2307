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

/**
 * The reporting state towards one server. At most one report is in flight: while it is, counts
 * keep accumulating in the keys and travel merged in the next one, so a slow owner sees fewer,
 * larger reports rather than a queue. A report that failed is sent again unchanged (same seq),
 * since the owner may have applied it: the dedup window then answers it as a duplicate.
 */
export class OwnerChannel {
  /** Per-owner sequence numbers: each owner's dedup window sees a dense series. */
  private seq: number;
  keyEpoch = 0;
  /** The owner process's incarnation from its last answer ("" before the first). */
  incarnation = "";
  inflight: PendingReport | undefined = undefined;
  failed: PendingReport | undefined = undefined;
  /** Consecutive failed calls; 0 after any answer. */
  failures = 0;
  lastError = "";
  /** An early report found this owner busy: send one as soon as the answer is in. */
  wantSoon = false;
  /** When the last new report was built: its successor's counts cover the time since. */
  lastBuiltAt = Number.NaN;

  constructor(
    readonly address: string,
    /** Where sequence numbers start: time-based, so a restarted gateway never reuses one. */
    seqBase: number,
  ) {
    this.seq = Math.max(0, Math.floor(seqBase));
  }

  get down(): boolean {
    return this.failures > 0;
  }

  nextSeq(): number {
    return ++this.seq;
  }
}
