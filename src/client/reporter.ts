import type { Clock, Timer } from "../core/clock.js";
import { type Policy, PolicyKind } from "../core/policy.js";
import type { Routing } from "../keyspace/routing.js";
import { clientRetries, ErrorCode } from "../protocol/item-errors.js";
import type { KeyPolicy, ReportEntryMsg as ReportEntry, ReportResponse } from "../protocol/messages.js";
import type { ClientKey, Drained } from "./client-key.js";
import { OwnerChannel, type PendingReport } from "./owner-channel.js";
import type { ClientTransport, LimiterLogger } from "./transport.js";

export interface ReporterOptions {
  readonly clientId: string;
  /** This process's part of the client id on the wire (see `GatewayLimiterOptions.instanceId`). */
  readonly instanceId: string;
  readonly transport: ClientTransport;
  readonly clock: Clock;
  readonly reportIntervalMs: number;
  readonly reportTimeoutMs: number;
  readonly maxReportEntries: number;
  readonly resendWindowTotals: boolean;
  readonly logger: LimiterLogger;
}

/** What the reporter needs from the rest of the limiter. */
export interface ReporterPorts {
  /** Whether `k` still counts for its key (a config change may have replaced it). */
  isCurrent(k: ClientKey): boolean;
  readonly directory: {
    readonly generation: number;
    refreshView(force: boolean): void;
    refreshLimits(): void;
    sawGeneration(generation: number): void;
    sawConfigVersion(version: string): void;
  };
  /** Runs a report round now (an early one). */
  wake(): void;
  /** A policy for `k` was just applied: callers waiting on it may be admitted now. */
  policyApplied?(k: ClientKey): void;
}

function policyFromWire(p: KeyPolicy, now: number): Policy {
  return {
    kind: (p.kind ?? PolicyKind.ALLOW) as Policy["kind"],
    units: p.units ?? 0,
    fraction: p.fraction ?? 0,
    until: now + (p.validMs ?? 0),
    remaining: p.remaining ?? 0,
    resetAt: now + (p.resetMs ?? 0),
    ...(p.sharePerS !== undefined ? { share: p.sharePerS / 1000 } : {}),
  };
}

/**
 * Sends the counts: one report per owner with the keys used since the last one, over a channel
 * per owner, and applies each answer to its keys (policies, key handles, errors). A failed report
 * is sent again, and the keys of an owner that keeps failing fall back to a local share.
 */
export class Reporter {
  private readonly channels = new Map<string, OwnerChannel>();
  private dirty: ClientKey[] = [];
  /** Keys given a share (GRANT, REJECT_FRACTION) in answer to counts since the last round. */
  private holding: ClientKey[] = [];
  private early: Timer | undefined;
  private earlyAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  #reportsSent = 0;
  #reportsFailed = 0;
  #reportsTooOld = 0;
  /** Above every sequence number a dropped channel used: a channel made again starts past it. */
  private seqFloor = 0;
  /** The client id reports carry: the configured one and this process's part. */
  private readonly wireId: string;
  /** Units decided since start, counted as they are taken into reports. */
  #unitsAdmitted = 0;
  #unitsRejected = 0;

  constructor(
    private readonly opts: ReporterOptions,
    private readonly ports: ReporterPorts,
  ) {
    this.wireId = `${opts.clientId}/${opts.instanceId}`;
  }

  get reportsSent(): number {
    return this.#reportsSent;
  }
  get reportsFailed(): number {
    return this.#reportsFailed;
  }
  /** Reports an owner refused as older than its dedup window (sent again under new numbers). */
  get reportsTooOld(): number {
    return this.#reportsTooOld;
  }
  get unitsAdmitted(): number {
    return this.#unitsAdmitted;
  }
  get unitsRejected(): number {
    return this.#unitsRejected;
  }

  /** Puts a key on the list for the next report. */
  markDirty(k: ClientKey): void {
    if (k.markDirty()) this.dirty.push(k);
  }

  /** Whether reports to this server are failing. */
  isDown(address: string): boolean {
    return this.channels.get(address)?.down ?? false;
  }

  /**
   * Reports now rather than at the next interval: a key is decided without a policy (new, or idle
   * past its policy's life), or its demand moved. At most one early report per tenth of an interval.
   */
  reportSoon(now: number): void {
    if (this.early !== undefined) return;
    const gap = this.opts.reportIntervalMs / 10;
    // Capped at the gap: a wall clock stepped back must not hold early reports until it catches up.
    const wait = Math.min(gap, Math.max(0, this.earlyAt + gap - now));
    this.early = this.opts.clock.after(wait, () => {
      this.early = undefined;
      this.earlyAt = this.opts.clock.now();
      this.ports.wake();
    });
  }

  /**
   * One round: a report per owner with the keys used since the last one. An `early` round that
   * finds an owner busy sends to it as soon as the answer is in.
   */
  report(routing: Routing, now: number, early: boolean): void {
    // A key that was given a share and then went unused is reported once with zero counts, so
    // its owner stops reserving a share for it and gives it to where the demand went.
    for (const k of this.holding) this.markDirty(k);
    this.holding = [];
    const batches = new Map<string, ClientKey[]>();
    const keys = this.dirty;
    this.dirty = [];
    for (const k of keys) {
      k.clearDirty();
      if (!this.ports.isCurrent(k)) continue; // replaced by a config change
      const address = routing.ownerOf(k.point);
      let b = batches.get(address);
      if (b === undefined) {
        b = [];
        batches.set(address, b);
      }
      b.push(k);
    }
    for (const [address, batch] of batches) this.send(this.channel(address), batch, now, early);
    // A failed report waits at its owner's channel to be sent again unchanged (same sequence
    // number: the owner may have applied it). When no key routes to that owner any more (they
    // all moved while it stayed a member), nothing above sends to it: send the report again here,
    // or its counts would be stranded. The owner answers NOT_OWNER per item (the counts come
    // back and go to the new owner) or, if it had applied it, duplicate (taken as applied).
    for (const [address, ch] of this.channels) {
      if (batches.has(address)) continue;
      const f = ch.takeRetry();
      if (f !== undefined) this.transmit(ch, f);
    }
  }

  private channel(address: string): OwnerChannel {
    let c = this.channels.get(address);
    if (c === undefined) {
      // Past any number used before towards this address, even if the wall clock stepped back.
      c = new OwnerChannel(address, Math.max(this.opts.clock.now() * 1000, this.seqFloor));
      this.channels.set(address, c);
    }
    return c;
  }

  private send(ch: OwnerChannel, batch: ClientKey[], now: number, early: boolean): void {
    if (ch.down) {
      for (const k of batch) this.maybeFallback(ch, k, now);
    }
    if (ch.busy) {
      // Busy, or a failed report must go first: these keys' counts ride in a later report.
      for (const k of batch) this.markDirty(k);
      if (early) ch.wantReportSoon();
      const f = ch.takeRetry();
      if (f !== undefined) this.transmit(ch, f);
      return;
    }
    const n = Math.min(batch.length, this.opts.maxReportEntries);
    const entries: ReportEntry[] = new Array(n);
    const drained: Drained[] = new Array(n);
    const resent: boolean[] = new Array(n);
    const keys = batch.slice(0, n);
    for (let i = 0; i < n; i++) {
      const k = keys[i]!;
      k.roll(now);
      const d = k.take();
      drained[i] = d;
      this.#unitsAdmitted += d.admitted;
      this.#unitsRejected += d.rejected;
      const entry: ReportEntry = {
        key: "",
        admitted: d.admitted,
        rejected: d.rejected,
        held: k.held,
        windowAdmitted: 0,
      };
      if (d.refunded > 0) entry.refunded = d.refunded;
      // A new owner, or a restarted one, rebuilds the key's window from this total.
      resent[i] = this.opts.resendWindowTotals && k.needsWindowTotal(ch.address, ch.incarnation);
      if (resent[i]) entry.windowAdmitted = k.windowTotal + d.admitted;
      const handle = k.handleFor(ch.address, ch.keyEpoch);
      if (handle !== 0) entry.keyHandle = handle;
      else entry.key = k.key;
      entries[i] = entry;
    }
    for (let i = n; i < batch.length; i++) this.markDirty(batch[i]!);
    const req = {
      clientId: this.wireId,
      seq: ch.nextSeq(),
      generation: this.ports.directory.generation,
      intervalMs: this.opts.reportIntervalMs,
      entries,
      keyEpoch: ch.keyEpoch,
      spanMs: ch.nextSpan(now, this.opts.reportIntervalMs),
    };
    this.transmit(ch, { req, keys, drained, resent, incarnation: ch.incarnation, attempts: 0 });
  }

  private transmit(ch: OwnerChannel, p: PendingReport): void {
    ch.sent(p);
    this.#reportsSent++;
    this.opts.transport.report(ch.address, p.req, this.opts.reportTimeoutMs, (err, res) => {
      if (!ch.settled(p)) return; // dropped when the owner left the cluster
      if (this.closed) return;
      try {
        if (err !== undefined || res === undefined) this.failed(ch, p, err);
        else this.answered(ch, p, res);
      } catch (e) {
        // A gateway must never go down with its limiter: log it and carry on.
        this.opts.logger.warn(
          { owner: ch.address, err: (e as Error).message },
          "handling a report's answer failed",
        );
      }
      if (ch.takeWantSoon()) this.reportSoon(this.opts.clock.now());
    });
  }

  private failed(ch: OwnerChannel, p: PendingReport, err: Error | undefined): void {
    this.#reportsFailed++;
    const failures = ch.markFailed(p, err?.message ?? "no answer");
    if (failures === 1) {
      this.opts.logger.warn(
        { owner: ch.address, err: ch.lastError },
        "owner unreachable; its keys fall back to a local share",
      );
    }
    const now = this.opts.clock.now();
    for (const key of p.keys) {
      const k = key.current();
      this.maybeFallback(ch, k, now);
      this.markDirty(k);
    }
    // The owner may have died: a new assignment would name its successor.
    this.ports.directory.refreshView(false);
    // Most failures are one lost message: send it again now rather than at the next interval.
    if (ch.failures === 1) this.reportSoon(this.opts.clock.now());
  }

  /**
   * One lost message is not an outage: a key keeps its policy while it is valid and goes to the
   * fallback share once the owner has failed twice in a row or the policy has run out.
   */
  private maybeFallback(ch: OwnerChannel, k: ClientKey, now: number): void {
    if (!k.inFallback && (ch.failures >= 2 || now >= k.until)) k.enterFallback(now);
  }

  private answered(ch: OwnerChannel, p: PendingReport, res: ReportResponse): void {
    const now = this.opts.clock.now();
    const inc = res.incarnation ?? "";
    const tooOld = res.tooOld === true;
    const a = ch.markAnswered(res.keyEpoch, inc, tooOld);
    if (a.recovered) this.opts.logger.info({ owner: ch.address }, "owner reachable again");
    if (a.restarted)
      this.opts.logger.info({ owner: ch.address }, "owner restarted: re-sending window totals");
    if (tooOld) {
      this.tooOld(ch, p);
      return;
    }
    // A duplicate is a retry of a report this owner applied before (its answer was lost).
    const duplicate = res.duplicate === true;
    let refresh = false;
    for (let i = 0; i < p.keys.length; i++) {
      const k = p.keys[i]!.current();
      const d = p.drained[i]!;
      const pol = res.policies[i];
      if (pol === undefined) {
        k.restore(d);
      } else if ((pol.error?.code ?? 0) !== 0) {
        const code = pol.error!.code;
        if (clientRetries(code) && duplicate) {
          // Answered now with NOT_OWNER (the key moved since) or the like, but the first copy was
          // applied, before any handoff: the counts are where the key's counter went. Sent again
          // they would count twice; so they count as applied (maybe: the first copy may have
          // failed for this item too, a loss within one report), into the window total that a
          // new owner without the counter rebuilds from.
          k.acknowledged(d, ch.address, "", now);
          if (code === ErrorCode.NOT_OWNER) refresh = true;
          if (code === ErrorCode.UNKNOWN_KEY_HANDLE) k.forgetHandle();
        } else if (clientRetries(code)) {
          k.restore(d);
          if (code === ErrorCode.NOT_OWNER) refresh = true;
          if (code === ErrorCode.UNKNOWN_KEY_HANDLE) k.forgetHandle();
          if (code === ErrorCode.COUNTERS_EXHAUSTED && !k.inFallback) k.enterFallback(now);
        } else {
          // Invalid here though valid in the limits we hold: our copy is stale. Counts dropped.
          k.dropped(d);
          this.opts.logger.warn({ key: k.key, err: pol.error!.message }, "owner refused a key");
          this.ports.directory.refreshLimits();
        }
      } else {
        // The entry built the owner's window if it carried the total, or if the owner is the
        // incarnation it was sent to; otherwise (the owner restarted meanwhile) the next report
        // carries the total.
        k.acknowledged(d, ch.address, p.resent[i] || p.incarnation === inc ? inc : "", now);
        if (pol.keyHandle) k.acceptHandle(pol.keyHandle, ch.address, res.keyEpoch);
        else if (!a.handlesValid) k.forgetHandleFrom(ch.address);
        k.applyPolicy(policyFromWire(pol, now), pol.gateways || 1, now, pol.limit);
        this.ports.policyApplied?.(k);
        if (
          (d.admitted > 0 || d.rejected > 0) &&
          (k.kind === PolicyKind.GRANT || k.kind === PolicyKind.REJECT_FRACTION)
        ) {
          this.holding.push(k);
        }
      }
      if (k.admitted > 0 || k.rejected > 0 || k.pendingRefund > 0) this.markDirty(k);
    }
    if (refresh) this.ports.directory.refreshView(true);
    else this.ports.directory.sawGeneration(res.generation);
    this.ports.directory.sawConfigVersion(res.configVersion);
  }

  /**
   * `p` was refused as older than the owner's dedup window: nothing of it was applied. The counts
   * go back into their keys and are sent again soon under sequence numbers past the window (a
   * silent "applied" here would lose them for as long as the numbers stay behind).
   */
  private tooOld(ch: OwnerChannel, p: PendingReport): void {
    this.#reportsTooOld++;
    // Logged once per run of them: the jumps that follow are expected.
    if (ch.rebase() === 0) {
      this.opts.logger.warn(
        { owner: ch.address, seq: p.req.seq, clientId: this.wireId },
        "owner refused a report as too old (another process with this client id?): sending its counts again under new sequence numbers",
      );
    }
    for (let i = 0; i < p.keys.length; i++) {
      const k = p.keys[i]!.current();
      k.restore(p.drained[i]!);
      this.markDirty(k);
    }
    this.reportSoon(this.opts.clock.now());
  }

  /**
   * Servers not among `members` left the cluster: whatever they were sent may or may not have
   * been applied before they died; the successor rebuilds the window from the re-sent totals,
   * which include it. A late answer from one must not be applied as well.
   */
  membersChanged(members: ReadonlySet<string>): void {
    for (const [address, ch] of this.channels) {
      if (members.has(address)) continue;
      const now = this.opts.clock.now();
      for (const p of ch.abandon()) {
        for (let i = 0; i < p.keys.length; i++)
          p.keys[i]!.current().acknowledged(p.drained[i]!, address, "", now);
      }
      this.seqFloor = Math.max(this.seqFloor, ch.lastSeq);
      this.channels.delete(address);
      this.opts.transport.drop(address);
    }
  }

  /** Stops sending: answers still to come are ignored. */
  close(): void {
    this.closed = true;
    this.early?.cancel();
  }
}
