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

/** Completion of one call: an error, or the answer. */
export type Done<T> = (err: Error | undefined, res?: T) => void;

/**
 * The three calls the gateway client makes, by server address. Callbacks rather than promises
 * so the in-memory simulation transport can deliver answers at exact virtual times.
 */
export interface ClientTransport {
  report(address: string, req: ReportRequest, timeoutMs: number, done: Done<ReportResponse>): void;
  /** A synchronous, exact decision (`Check`) by the key's owner. */
  check(address: string, req: CheckRequest, timeoutMs: number, done: Done<CheckResponse>): void;
  clusterView(address: string, timeoutMs: number, done: Done<ClusterView>): void;
  limits(address: string, knownVersion: string, timeoutMs: number, done: Done<Limits>): void;
  /** Issue 14: a pool backend's utilisation to the owner of the pool's key (optional). */
  reportPool?(
    address: string,
    req: PoolReportRequest,
    timeoutMs: number,
    done: Done<PoolReportResponse>,
  ): void;
  /** Forgets a server that left the cluster (closes its connection). */
  drop(address: string): void;
  close(): void;
}

/** Where the limiter tells of owners failing and recovering, and of answers it could not use. */
export interface LimiterLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}
