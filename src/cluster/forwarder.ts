import { NotOwnerError, UnavailableError } from "../core/errors.js";
import { ErrorCode, type ItemError } from "../protocol/item-errors.js";
import type {
  CheckRequest,
  CheckResponse,
  EnvoyRequest,
  EnvoyResponse,
  ForwardRequest,
} from "../protocol/messages.js";
import type { Owner } from "../server/ownership.js";
import type { Forwarder } from "../server/router.js";
import type { PeerRpc } from "./peers.js";

export interface ForwarderOptions {
  peer: (address: string) => PeerRpc;
  /** Most parts in one Forward call. */
  maxBatch?: number;
  /** Forward calls in flight per owner; parts queue (and batch) behind them. */
  maxInFlight?: number;
  deadlineMs?: number;
  /** Counts forwarded parts and calls, for metrics. */
  onCall?: (owner: string, parts: number, ok: boolean) => void;
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: Error): void;
}

class OwnerQueue {
  envoy: EnvoyRequest[] = [];
  envoyWaiters: Waiter<EnvoyResponse>[] = [];
  checks: CheckRequest[] = [];
  checkWaiters: Waiter<CheckResponse>[] = [];
  inFlight = 0;
  scheduled = false;
  generation = 0;
  get size(): number {
    return this.envoy.length + this.checks.length;
  }
}

function asError(e: ItemError | null | undefined, generation: number): Error | undefined {
  if (!e?.code) return undefined;
  return e.code === ErrorCode.NOT_OWNER
    ? new NotOwnerError(e.message, generation)
    : new UnavailableError(e.message);
}

/**
 * Micro-batches calls to each owner: parts that arrive in the same turn of the event loop, or
 * while earlier calls to that owner are still in flight, go out together in one `Forward` call.
 * Under load that is one call per owner per round trip, however many requests come in.
 */
export class BatchingForwarder implements Forwarder {
  private readonly queues = new Map<string, OwnerQueue>();
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly deadlineMs: number;

  constructor(private readonly opts: ForwarderOptions) {
    this.maxBatch = opts.maxBatch ?? 512;
    this.maxInFlight = opts.maxInFlight ?? 2;
    this.deadlineMs = opts.deadlineMs ?? 2000;
  }

  envoy(owner: Owner, req: EnvoyRequest, generation: number): Promise<EnvoyResponse> {
    return new Promise((resolve, reject) => {
      const q = this.queue(owner.address);
      q.envoy.push(req);
      q.envoyWaiters.push({ resolve, reject });
      this.schedule(owner.address, q, generation);
    });
  }

  check(owner: Owner, req: CheckRequest, generation: number): Promise<CheckResponse> {
    return new Promise((resolve, reject) => {
      const q = this.queue(owner.address);
      q.checks.push(req);
      q.checkWaiters.push({ resolve, reject });
      this.schedule(owner.address, q, generation);
    });
  }

  private queue(address: string): OwnerQueue {
    let q = this.queues.get(address);
    if (!q) {
      q = new OwnerQueue();
      this.queues.set(address, q);
    }
    return q;
  }

  private schedule(address: string, q: OwnerQueue, generation: number): void {
    q.generation = Math.max(q.generation, generation);
    if (q.scheduled || q.inFlight >= this.maxInFlight) return;
    q.scheduled = true;
    setImmediate(() => {
      q.scheduled = false;
      this.flush(address, q);
    });
  }

  private flush(address: string, q: OwnerQueue): void {
    while (q.size > 0 && q.inFlight < this.maxInFlight) {
      const nEnvoy = Math.min(q.envoy.length, this.maxBatch);
      const nChecks = Math.min(q.checks.length, this.maxBatch - nEnvoy);
      const req: ForwardRequest = {
        generation: q.generation,
        envoy: q.envoy.splice(0, nEnvoy),
        checks: q.checks.splice(0, nChecks),
      };
      const envoyWaiters = q.envoyWaiters.splice(0, nEnvoy);
      const checkWaiters = q.checkWaiters.splice(0, nChecks);
      q.inFlight++;
      this.opts
        .peer(address)
        .forward(req, { deadlineMs: this.deadlineMs })
        .then(
          (res) => {
            this.opts.onCall?.(address, nEnvoy + nChecks, true);
            for (let i = 0; i < envoyWaiters.length; i++) {
              const part = res.envoy[i];
              const err = part ? asError(part.error, res.generation) : new UnavailableError("no answer");
              if (err) envoyWaiters[i]!.reject(err);
              else envoyWaiters[i]!.resolve(part!.response ?? { overallCode: 0, statuses: [] });
            }
            for (let i = 0; i < checkWaiters.length; i++) {
              const part = res.checks[i];
              const err = asError(res.checkErrors[i], res.generation);
              if (err) checkWaiters[i]!.reject(err);
              else if (!part) checkWaiters[i]!.reject(new UnavailableError("no answer"));
              else checkWaiters[i]!.resolve(part);
            }
          },
          (err: Error) => {
            this.opts.onCall?.(address, nEnvoy + nChecks, false);
            const e = new UnavailableError(`forwarding to ${address} failed: ${err.message}`);
            for (const w of envoyWaiters) w.reject(e);
            for (const w of checkWaiters) w.reject(e);
          },
        )
        .finally(() => {
          q.inFlight--;
          if (q.size > 0) this.flush(address, q);
          else if (q.inFlight === 0) this.queues.delete(address);
        });
    }
  }
}
