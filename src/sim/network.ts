import type { ClientTransport, Done } from "../client/transport.js";
import type { ManualClock } from "../core/clock.js";
import type {
  CheckRequest,
  CheckResponse,
  ClusterView,
  Limits,
  PoolReportRequest,
  PoolReportResponse,
  ReportRequest,
  ReportResponse,
} from "../protocol/messages.js";
import type { SimCluster } from "./sim-cluster.js";

export interface NetworkOptions {
  /** One-way delay, ms. */
  delayMs: number;
  /** Extra one-way delay, uniform in [0, jitterMs). */
  jitterMs: number;
  /** Probability that a message (request or answer) is lost. */
  loss: number;
  random: () => number;
}

/**
 * The in-memory transport: calls the simulated servers' real Limiter code after a network delay,
 * and may lose the request or the answer. A call to a crashed server fails after one delay (the
 * connection is refused); a lost message shows as the caller's timeout.
 */
export class SimNetwork implements ClientTransport {
  delivered = 0;
  lost = 0;

  constructor(
    private readonly clock: ManualClock,
    private readonly cluster: SimCluster,
    private readonly opts: NetworkOptions,
  ) {}

  private delay(): number {
    return this.opts.delayMs + this.opts.random() * this.opts.jitterMs;
  }

  private call<T>(address: string, timeoutMs: number, done: Done<T>, serve: () => T): void {
    let finished = false;
    const finish = (err: Error | undefined, res?: T) => {
      if (finished) return;
      finished = true;
      timer.cancel();
      done(err, res);
    };
    const timer = this.clock.after(timeoutMs, () =>
      finish(new Error(`deadline of ${timeoutMs} ms exceeded`)),
    );
    if (this.opts.random() < this.opts.loss) {
      this.lost++;
      return;
    }
    this.clock.after(this.delay(), () => {
      const server = this.cluster.byAddress(address);
      if (server === undefined || !server.up) {
        this.clock.after(this.delay(), () => finish(new Error(`connection refused by ${address}`)));
        return;
      }
      let res: T;
      try {
        res = serve();
      } catch (e) {
        this.clock.after(this.delay(), () => finish(e as Error));
        return;
      }
      this.delivered++;
      if (this.opts.random() < this.opts.loss) {
        this.lost++;
        return;
      }
      this.clock.after(this.delay(), () => finish(undefined, res));
    });
  }

  report(address: string, req: ReportRequest, timeoutMs: number, done: Done<ReportResponse>): void {
    this.call(address, timeoutMs, done, () =>
      this.cluster.byAddress(address)!.limiter.reportAndGetPolicy(req),
    );
  }

  check(address: string, req: CheckRequest, timeoutMs: number, done: Done<CheckResponse>): void {
    this.call(address, timeoutMs, done, () => this.cluster.byAddress(address)!.limiter.check(req));
  }

  clusterView(address: string, timeoutMs: number, done: Done<ClusterView>): void {
    this.call(address, timeoutMs, done, () => this.cluster.byAddress(address)!.limiter.clusterView());
  }

  limits(address: string, knownVersion: string, timeoutMs: number, done: Done<Limits>): void {
    this.call(address, timeoutMs, done, () =>
      this.cluster.byAddress(address)!.limiter.getLimits({ knownVersion }),
    );
  }

  reportPool(
    address: string,
    req: PoolReportRequest,
    timeoutMs: number,
    done: Done<PoolReportResponse>,
  ): void {
    this.call(address, timeoutMs, done, () => this.cluster.byAddress(address)!.limiter.reportPool(req));
  }

  drop(): void {}

  close(): void {}
}
