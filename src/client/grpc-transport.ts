import type { ChannelOptions } from "@grpc/grpc-js";
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
import { type CallMetadata, connect, type RateLimiterRpc } from "../protocol/rpc.js";
import { tracedCall } from "../protocol/tracing.js";
import type { ClientTls } from "../security/tls.js";
import type { ClientTransport, Done } from "./transport.js";

function settle<T>(p: Promise<T>, done: Done<T>): void {
  p.then(
    (res) => done(undefined, res),
    (err: Error) => done(err),
  );
}

/**
 * The production transport: one gRPC channel per server address, opened on first use; over TLS
 * when `tls` is given (its files are watched until `close`).
 */
export class GrpcTransport implements ClientTransport {
  private readonly clients = new Map<string, RateLimiterRpc>();

  constructor(
    private readonly options: ChannelOptions = {},
    private readonly tls?: ClientTls,
    /** Per call: the gateway's bearer token (`tokenFile`), read as of the call. */
    private readonly metadata?: CallMetadata,
  ) {}

  private client(address: string): RateLimiterRpc {
    let c = this.clients.get(address);
    if (c === undefined) {
      c = this.tls
        ? connect(
            address,
            { ...this.tls.options, ...this.options },
            undefined,
            this.tls.credentials,
            this.metadata,
          )
        : connect(address, this.options, undefined, undefined, this.metadata);
      this.clients.set(address, c);
    }
    return c;
  }

  report(address: string, req: ReportRequest, timeoutMs: number, done: Done<ReportResponse>): void {
    const attrs = () => ({ "shardlimit.owner": address, "shardlimit.entries": req.entries.length });
    const call = tracedCall("shardlimit.report", attrs, (metadata) =>
      this.client(address).reportAndGetPolicy(req, { deadlineMs: timeoutMs, metadata }),
    );
    settle(call, done);
  }

  check(address: string, req: CheckRequest, timeoutMs: number, done: Done<CheckResponse>): void {
    const attrs = () => ({ "shardlimit.owner": address, "shardlimit.items": req.items.length });
    settle(
      tracedCall("shardlimit.check", attrs, (metadata) =>
        this.client(address).check(req, { deadlineMs: timeoutMs, metadata }),
      ),
      done,
    );
  }

  clusterView(address: string, timeoutMs: number, done: Done<ClusterView>): void {
    settle(this.client(address).getClusterView({ knownGeneration: 0 }, { deadlineMs: timeoutMs }), done);
  }

  limits(address: string, knownVersion: string, timeoutMs: number, done: Done<Limits>): void {
    settle(this.client(address).getLimits({ knownVersion }, { deadlineMs: timeoutMs }), done);
  }

  reportPool(
    address: string,
    req: PoolReportRequest,
    timeoutMs: number,
    done: Done<PoolReportResponse>,
  ): void {
    settle(this.client(address).reportPool(req, { deadlineMs: timeoutMs }), done);
  }

  drop(address: string): void {
    this.clients.get(address)?.close();
    this.clients.delete(address);
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    this.tls?.source.close();
  }
}
