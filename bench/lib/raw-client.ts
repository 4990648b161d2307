import * as grpc from "@grpc/grpc-js";
import type { Caller } from "../../src/loadtest/h2-client.js";
import { openLoop as runOpenLoop } from "../../src/testkit/open-loop.js";
import { type LatencySummary, latencyHistogram, summarize } from "./common.js";
import { type BenchServer, type ServerStatsDelta, statsDelta } from "./spawn-server.js";

export type { Caller };

export type ClientKind = "h2" | "grpc-js";

/** TLS for a bench client: file contents (CA, client certificate and key) and the server name. */
export interface BenchClientTls {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
  serverName: string;
}

/**
 * `h2`: the hand-rolled HTTP/2 client (cheap); `grpc-js`: grpc-js with identity serializers.
 * Over TLS with `tls`.
 */
export async function makeClient(
  kind: string,
  address: string,
  connections = 1,
  tls?: BenchClientTls,
): Promise<Caller> {
  if (kind === "grpc-js") return new RawClient(address, connections, tls);
  if (kind !== "h2") throw new Error(`unknown client ${kind}: h2 or grpc-js`);
  if (connections !== 1) throw new Error("the h2 client uses one connection");
  const { H2Client } = await import("../../src/loadtest/h2-client.js");
  return new H2Client(
    address,
    tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.serverName } : undefined,
  );
}

/**
 * A grpc-js client that sends pre-encoded request bytes and hands back the response bytes
 * undecoded (identity serializers), so the load generator costs little beyond grpc-js itself.
 */
export class RawClient implements Caller {
  private readonly clients: grpc.Client[];
  private next = 0;

  /** `connections` > 1 opens that many HTTP/2 connections and spreads calls over them. */
  constructor(address: string, connections = 1, tls?: BenchClientTls) {
    const creds = tls
      ? grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null)
      : grpc.credentials.createInsecure();
    this.clients = Array.from(
      { length: connections },
      (_, i) =>
        new grpc.Client(address, creds, {
          ...(tls ? { "grpc.ssl_target_name_override": tls.serverName } : {}),
          "grpc.max_receive_message_length": 64 * 1024 * 1024,
          "grpc.max_send_message_length": 64 * 1024 * 1024,
          // A private subchannel pool per client: distinct connections instead of a shared one.
          ...(connections > 1 ? { "grpc.use_local_subchannel_pool": 1, "bench.connection": i } : {}),
        }),
    );
  }

  async ready(timeoutMs = 10_000): Promise<void> {
    await Promise.all(
      this.clients.map(
        (c) =>
          new Promise<void>((resolve, reject) =>
            c.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
          ),
      ),
    );
  }

  call(
    method: string,
    body: Buffer,
    done: (err: { code: number; details: string } | null, res?: Buffer) => void,
  ): void {
    const c = this.clients[this.next]!;
    this.next = (this.next + 1) % this.clients.length;
    c.makeUnaryRequest<Buffer, Buffer>(
      method,
      (b) => b,
      (b) => b,
      body,
      done,
    );
  }

  callAsync(method: string, body: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      this.call(method, body, (err, res) => (err ? reject(err) : resolve(res!))),
    );
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}

export const METHOD = {
  report: "/shardlimit.v1.RateLimiter/ReportAndGetPolicy",
  check: "/shardlimit.v1.RateLimiter/Check",
  shouldRateLimit: "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
} as const;

export interface ClosedLoopResult {
  calls: number;
  errors: number;
  firstError: string | undefined;
  wallS: number;
  callsPerSec: number;
  responseBytes: number;
}

/**
 * `concurrency` calls in flight for `seconds`: each completion sends the next request at once.
 * `request(i)` gives the bytes of call i; `onLatencyUs` gets each call's time in microseconds.
 */
export function closedLoop(
  client: Caller,
  method: string,
  concurrency: number,
  seconds: number,
  request: (i: number) => Buffer,
  onLatencyUs?: (us: number) => void,
): Promise<ClosedLoopResult> {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const end = start + BigInt(Math.round(seconds * 1e9));
    let i = 0;
    let calls = 0;
    let errors = 0;
    let bytes = 0;
    let firstError: string | undefined;
    let inFlight = 0;
    let stopping = false;
    let stoppedAt = 0n;
    const send = () => {
      const t0 = process.hrtime.bigint();
      inFlight++;
      client.call(method, request(i++), (err, res) => {
        inFlight--;
        const t1 = process.hrtime.bigint();
        if (err) {
          errors++;
          firstError ??= `${err.code} ${err.details}`;
        } else if (!stopping) {
          calls++;
          bytes += res!.length;
          onLatencyUs?.(Number(t1 - t0) / 1000);
        }
        if (!stopping && t1 >= end) {
          stopping = true;
          stoppedAt = t1;
        }
        if (!stopping) send();
        else if (inFlight === 0) {
          const wallS = Number(stoppedAt - start) / 1e9;
          resolve({ calls, errors, firstError, wallS, callsPerSec: calls / wallS, responseBytes: bytes });
        }
      });
    };
    for (let k = 0; k < concurrency; k++) send();
  });
}

export interface Run {
  concurrency: number;
  seconds: number;
  calls: number;
  callsPerSec: number;
  /** Units (report entries, decisions) per second: calls/s x units per call. */
  unitsPerSec: number;
  errors: number;
  firstError: string | undefined;
  latency: LatencySummary;
  server: ServerStatsDelta;
  /** Units per second of server CPU (all its threads): what one server core could do. */
  unitsPerServerCpuSecond: number;
  /** Server CPU microseconds per call. */
  serverCpuUsPerCall: number;
  /** This (load-generating) process's CPU seconds per wall second. */
  clientCpuPerWallS: number;
  responseBytesPerCall: number;
}

/** One closed-loop measurement with the server's and this process's CPU use around it. */
export async function measuredRun(
  server: BenchServer,
  client: Caller,
  method: string,
  concurrency: number,
  seconds: number,
  request: (i: number) => Buffer,
  unitsPerCall: number,
): Promise<Run> {
  const h = latencyHistogram();
  const s0 = await server.stats();
  const c0 = process.cpuUsage();
  const r = await closedLoop(client, method, concurrency, seconds, request, (us) => h.recordValue(us));
  const c1 = process.cpuUsage(c0);
  const s1 = await server.stats();
  const sd = statsDelta(s0, s1);
  const unitsPerSec = r.callsPerSec * unitsPerCall;
  const cpuS = sd.cpuPerWallS * sd.wallS;
  return {
    concurrency,
    seconds: r.wallS,
    calls: r.calls,
    callsPerSec: r.callsPerSec,
    unitsPerSec,
    errors: r.errors,
    firstError: r.firstError,
    latency: summarize(h),
    server: sd,
    unitsPerServerCpuSecond: unitsPerSec / sd.cpuPerWallS,
    serverCpuUsPerCall: (1e6 * cpuS) / Math.max(1, r.calls),
    clientCpuPerWallS: (c1.user + c1.system) / 1e6 / sd.wallS,
    responseBytesPerCall: r.responseBytes / Math.max(1, r.calls),
  };
}

export interface OpenLoopResult {
  targetPerSec: number;
  achievedPerSec: number;
  sent: number;
  completed: number;
  errors: number;
  firstError: string | undefined;
  /** From the scheduled send time to the answer: includes any wait the generator itself caused. */
  latency: LatencySummary;
  /** From the actual send to the answer. */
  service: LatencySummary;
  /** How late sends left against their schedule (the generator's own lag). */
  sendLag: LatencySummary;
  maxInFlight: number;
  clientCpuPerWallS: number;
}

/**
 * The test kit's open loop (no coordinated omission: latency counts from each call's due time)
 * over a Caller, spinning on setImmediate so sends leave on schedule at any rate; the generator
 * spins one core while it runs.
 */
export async function openLoop(
  client: Caller,
  method: string,
  ratePerSec: number,
  seconds: number,
  request: (i: number) => Buffer,
): Promise<OpenLoopResult> {
  const cpu0 = process.cpuUsage();
  const o = await runOpenLoop({
    ratePerSec,
    seconds,
    spin: true,
    // The old loop waited for every call; a minute is longer than any deadline here.
    graceMs: 60_000,
    call: (i) =>
      new Promise<void>((resolve, reject) =>
        client.call(method, request(i), (err) =>
          err ? reject(new Error(`${err.code} ${err.details}`)) : resolve(),
        ),
      ),
  });
  const cpu = process.cpuUsage(cpu0);
  return {
    targetPerSec: ratePerSec,
    achievedPerSec: o.completed / o.wallSeconds,
    sent: o.sent,
    completed: o.completed,
    errors: o.errors,
    firstError: o.firstError,
    latency: summarize(o.latency),
    service: summarize(o.service),
    sendLag: summarize(o.sendLag),
    maxInFlight: o.maxInFlight,
    clientCpuPerWallS: (cpu.user + cpu.system) / 1e6 / o.wallSeconds,
  };
}
