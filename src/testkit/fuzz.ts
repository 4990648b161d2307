import * as grpc from "@grpc/grpc-js";
import { root } from "../protocol/proto.js";
import { MUTATION_KINDS, mutate } from "./fuzz-wire.js";

/**
 * An RPC fuzzer for a running server: every unary method of every service it serves gets valid
 * requests mutated by each kind in `fuzz-wire.ts` in turn. What a hostile caller may not do:
 * crash the process, get an INTERNAL (or UNKNOWN) status, or change anything with a call that was
 * refused. "Changed" is read from the server's own gauges (counters, reporting clients, ranges
 * awaiting handoff, standby copies held) after every refused call.
 */

/** Valid request objects per method, the seeds that mutations start from. */
function seeds(method: string, i: number): object[] {
  const key = `api/fz=${i}`;
  const check = {
    items: [
      { key, cost: 1, ticket: i % 3 === 0 },
      // Waits at most 20 ms (mutations make it too large, negative or garbage).
      { key: `${key}b`, cost: 2, ticket: i % 3 === 0, maxWaitMs: 20 },
    ],
    atomic: i % 2 === 0,
    generation: 1,
    ticketTimeoutMs: i % 3 === 0 ? 1000 : 0,
  };
  const counter = {
    key,
    shard: key,
    algorithm: "token_bucket",
    tRelMs: -5,
    x: 3,
    y: 0,
    expiresInMs: 60_000,
    clients: [{ id: "g", demand: 1, held: 0, seenMsAgo: 1 }],
    leases: [{ id: "l", amount: 1, expiresInMs: 100 }],
  };
  const envoy = {
    domain: "api",
    descriptors: [{ entries: [{ key: "fz", value: String(i) }], hitsAddend: { value: 1 } }],
    hitsAddend: 1,
  };
  switch (method) {
    case "ReportAndGetPolicy":
      return [
        {
          clientId: `fuzz-${i}`,
          seq: 1000 + i,
          generation: 1,
          intervalMs: 100,
          spanMs: 100,
          keyEpoch: 0,
          entries: [
            { key, admitted: 3, rejected: 1, windowAdmitted: 3, refunded: 1 },
            { key: "api/conc=x", held: 1 },
          ],
        },
      ];
    case "Check":
      return [check];
    case "Acquire":
      return [{ key: `api/conc=${i}`, leaseId: `l${i}`, amount: 1, timeoutMs: 1000, generation: 1 }];
    case "Release":
      return [{ key: `api/conc=${i}`, leaseId: `l${i}`, generation: 1 }];
    case "Settle":
      return [
        { key, delta: 2, generation: 1 },
        // By ticket: an id of the issued shape that no Check issued, with two actual costs.
        { key, generation: 1, ticketId: "AAAAAAAAAAAAAAAAAAAAAA", actual: [1, 2] },
      ];
    case "GetClusterView":
      return [{ knownGeneration: i }];
    case "GetLimits":
      return [{ knownVersion: "x" }];
    case "ReportPool":
      return [{ pool: "fz", backend: `b${i}`, utilisation: 0.5, capacity: 100, generation: 1 }];
    case "Inspect":
      return [{ key }];
    case "ShouldRateLimit":
      return [envoy];
    case "Forward":
      return [{ generation: 1, envoy: [envoy], checks: [check] }];
    case "Handoff":
      return [
        {
          generation: 1,
          from: "fuzzer",
          ranges: [{ start: 0, end: 2 ** 32 }],
          counters: [counter],
          done: i % 2 === 0,
        },
      ];
    case "Replicate":
      return [{ from: "fuzzer", generation: 1 + i, counters: [counter], drained: i % 5 === 0 }];
    case "Standby":
      return [{ of: "fuzzer", generation: 1 + i, ranges: [{ start: 0, end: 2 ** 32 }], offset: i % 3 }];
    case "Reclaim":
      return [
        { generation: 1 + i, from: "fuzzer", address: "127.0.0.1:1", ranges: [{ start: 0, end: 2 ** 32 }] },
      ];
    default:
      return [{}];
  }
}

export interface FuzzTarget {
  /** host:port of the gRPC endpoint. */
  address: string;
  /** The server's /metrics URL. */
  metricsUrl: string;
  /** Fully qualified services to fuzz, e.g. `shardlimit.v1.Peer`. */
  services: readonly string[];
  /** Sent on every call: a bearer token, so a server with an auth file lets the calls through. */
  metadata?: () => grpc.Metadata;
}

export interface MethodReport {
  method: string;
  cases: number;
  ok: number;
  /** Refused calls by gRPC status name. */
  refused: Record<string, number>;
  /** INTERNAL or UNKNOWN answers: a server fault. */
  internal: number;
  /** Refused calls after which a gauge had grown or moved. */
  changedByRefused: number;
  /** First few problems, with the mutation that caused them. */
  problems: string[];
}

const WATCHED = [
  "shardlimit_counters",
  "shardlimit_clients",
  "shardlimit_ranges_awaiting_handoff",
  "shardlimit_standby_entries",
];

async function gauges(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(url)).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const [name, value] = line.split(" ");
    if (name !== undefined && WATCHED.includes(name)) out[name] = Number(value);
  }
  // Without the gauges the "nothing changed" check would pass vacuously.
  if (out.shardlimit_counters === undefined) throw new Error(`${url} has no shardlimit_counters gauge`);
  return out;
}

/** A refused call may not create anything: counters and clients must not grow, nor ranges move. */
function changed(before: Record<string, number>, after: Record<string, number>): string | undefined {
  for (const name of WATCHED) {
    const a = before[name] ?? 0;
    const b = after[name] ?? 0;
    if (name === "shardlimit_ranges_awaiting_handoff" ? b !== a : b > a) return `${name} ${a} -> ${b}`;
  }
  return undefined;
}

const identity = (b: Buffer) => b;

/** A unary method that sends and receives raw bytes: what a hostile caller puts on the wire. */
export function rawMethod(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

/** Runs `casesPerMethod` mutated calls against every unary method of `target.services`. */
export async function fuzzServer(
  target: FuzzTarget,
  casesPerMethod: number,
  seed = 1,
  deadlineMs = 5000,
): Promise<MethodReport[]> {
  let s = seed >>> 0 || 1;
  const rand = () => {
    // xorshift32: reproducible for a seed.
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  const reports: MethodReport[] = [];
  for (const serviceName of target.services) {
    const service = root.lookupService(serviceName);
    const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    for (const m of Object.values(service.methods)) {
      def[m.name] = rawMethod(`/${serviceName}/${m.name}`);
    }
    const Client = grpc.makeGenericClientConstructor(def as grpc.ServiceDefinition, "Fuzz");
    const client = new Client(target.address, grpc.credentials.createInsecure(), {
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    }) as unknown as Record<
      string,
      (b: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Buffer>) => void
    >;
    try {
      for (const m of Object.values(service.methods)) {
        const type = root.lookupType(m.resolvedRequestType!.fullName);
        const r: MethodReport = {
          method: `${serviceName}/${m.name}`,
          cases: 0,
          ok: 0,
          refused: {},
          internal: 0,
          changedByRefused: 0,
          problems: [],
        };
        let last = await gauges(target.metricsUrl);
        for (let i = 0; i < casesPerMethod; i++) {
          const bases = seeds(m.name, i);
          const base = type.encode(type.fromObject(bases[i % bases.length]!)).finish();
          const { kind, bytes } = mutate(base, i, rand);
          const err = await new Promise<grpc.ServiceError | null>((resolve) =>
            client[m.name]!(
              Buffer.from(bytes),
              target.metadata?.() ?? new grpc.Metadata(),
              { deadline: new Date(Date.now() + deadlineMs) },
              (e) => resolve(e),
            ),
          );
          r.cases++;
          const now = await gauges(target.metricsUrl);
          if (err === null) r.ok++;
          else {
            const name = grpc.status[err.code] ?? String(err.code);
            r.refused[name] = (r.refused[name] ?? 0) + 1;
            const problem =
              err.code === grpc.status.INTERNAL || err.code === grpc.status.UNKNOWN
                ? `${name}: ${err.details}`
                : undefined;
            if (problem) r.internal++;
            const moved = changed(last, now);
            if (moved) r.changedByRefused++;
            if ((problem || moved) && r.problems.length < 5) {
              r.problems.push(
                `${kind} (${Buffer.from(bytes).toString("hex").slice(0, 80)}): ${problem ?? moved}`,
              );
            }
          }
          last = now;
        }
        reports.push(r);
      }
    } finally {
      (client as unknown as grpc.Client).close();
    }
  }
  return reports;
}

export { MUTATION_KINDS };
