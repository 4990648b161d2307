import { Redis } from "ioredis";
import { createLimiter } from "../client/create.js";
import { GrpcTransport } from "../client/grpc-transport.js";
import { keyPoint } from "../keyspace/hash.js";
import { Routing } from "../keyspace/routing.js";
import type { CheckResponse, EnvoyResponse } from "../protocol/messages.js";
import { root } from "../protocol/proto.js";
import { connect } from "../protocol/rpc.js";
import { H2Client } from "./h2-client.js";
import { fixedWindowLimiter, flexibleLimiter } from "./redis-limiters.js";

/**
 * What one load-generator thread drives. Batched workloads decide in the gateway (shardlimit:
 * locally, reports every 100 ms; Redis: one round trip per decision, auto-pipelined); sync
 * workloads call a service's `Check` for each decision.
 */
export type WorkloadSpec =
  | {
      kind: "shardlimit-batched";
      servers: string[];
      clientId: string;
      key?: string;
      /** Gateways this thread hosts (default 1), each its own client id, taking calls in turn. */
      gateways?: number;
      /** Costs drawn log-uniformly from 1 to this (LLM tokens); the call returns ± units. */
      maxCost?: number;
      /** Each call is a burst of this many requests at one gateway (D: fragmentation). */
      burst?: number;
    }
  | { kind: "redis-batched"; redisUrl: string; mode: "flexible" | "fixed-window"; limit: number }
  | { kind: "shardlimit-check"; servers: string[]; clientId: string }
  | { kind: "check"; address: string }
  /** `Check` through the lean HTTP/2 client, each key sent to its owner when `route`. */
  | { kind: "check-h2"; servers: string[]; route: boolean }
  | { kind: "envoy"; address: string }
  /** Envoy's ShouldRateLimit through the lean HTTP/2 client (Envoy's own client is not grpc-js). */
  | { kind: "envoy-h2"; address: string };

export interface Workload {
  /** One decision for key number `k`; a promise when it waits on the network. */
  call(k: number): unknown;
  close(): Promise<void>;
}

const CheckRequestType = root.lookupType("shardlimit.v1.CheckRequest");
const CheckResponseType = root.lookupType("shardlimit.v1.CheckResponse");
const CHECK_PATH = "/shardlimit.v1.RateLimiter/Check";
const RateLimitRequestType = root.lookupType("envoy.service.ratelimit.v3.RateLimitRequest");
const RateLimitResponseType = root.lookupType("envoy.service.ratelimit.v3.RateLimitResponse");
const SHOULD_RATE_LIMIT_PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/** A Check answer's one item: admitted or not; a per-item error is the call's error. */
function checkAllowed(r: CheckResponse): boolean {
  const item = r.results[0];
  if (item?.error?.code) throw new Error(item.error.message);
  return item?.allowed === true;
}

/** Envoy's request for key number `k`: one descriptor, one entry. */
function envoyRequest(k: number) {
  return { domain: "bench", descriptors: [{ entries: [{ key: "k", value: String(k) }] }] };
}

export function keyName(k: number): string {
  return `bench/k=${k}`;
}

export async function openWorkload(spec: WorkloadSpec, keys: number): Promise<Workload> {
  const names = Array.from({ length: keys }, (_, k) => keyName(k));
  switch (spec.kind) {
    case "shardlimit-batched": {
      const n = spec.gateways ?? 1;
      // Gateways hosted together share one channel per server (their own would be n x servers).
      const shared = new GrpcTransport();
      const limiters = await Promise.all(
        Array.from({ length: n }, (_, g) =>
          createLimiter({
            servers: spec.servers,
            clientId: n === 1 ? spec.clientId : `${spec.clientId}-${g}`,
            transport: shared,
            connectTimeoutMs: 20_000,
          }),
        ),
      );
      const fixed = spec.key;
      let pick = 12345;
      // Calls go to the hosted gateways at random, so each sees its own random arrival times.
      const next = () => {
        if (n === 1) return limiters[0]!;
        pick = (pick * 48271) % 2147483647;
        return limiters[pick % n]!;
      };
      const close = async () => {
        for (const l of limiters) l.flush();
        await new Promise((r) => setTimeout(r, 100));
        for (const l of limiters) l.close();
        shared.close();
      };
      const burst = spec.burst;
      if (burst !== undefined) {
        return {
          call: (k) => {
            const g = next();
            const key = fixed ?? names[k]!;
            let admitted = 0;
            for (let b = 0; b < burst; b++) if (g.decide(key)) admitted++;
            return { admitted, offered: burst };
          },
          close,
        };
      }
      const max = spec.maxCost;
      let seed = 12345;
      const cost = () => {
        seed = (seed * 16807) % 2147483647;
        return Math.max(1, Math.round(Math.exp((seed / 2147483647) * Math.log(max!))));
      };
      const costed = (key: string) => {
        const c = cost();
        return next().decide(key, c) ? c : -c;
      };
      return {
        call:
          max !== undefined
            ? (k) => costed(fixed ?? names[k]!)
            : fixed === undefined
              ? (k) => next().decide(names[k]!)
              : () => next().decide(fixed),
        close,
      };
    }
    case "shardlimit-check": {
      // The gateway client sends each Check straight to the key's owner.
      const limiter = await createLimiter({ servers: spec.servers, clientId: spec.clientId });
      return {
        call: (k) => limiter.check(names[k]!),
        async close() {
          limiter.close();
        },
      };
    }
    case "redis-batched": {
      const redis = new Redis(spec.redisUrl, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
      const l =
        spec.mode === "flexible" ? flexibleLimiter(redis, spec.limit) : fixedWindowLimiter(redis, spec.limit);
      return {
        call: (k) => l.decide(names[k]!, 1),
        async close() {
          redis.disconnect();
        },
      };
    }
    case "envoy": {
      const rpc = connect(spec.address);
      return {
        call: (k) =>
          rpc.shouldRateLimit(envoyRequest(k), { deadlineMs: 5000 }).then((r) => r.overallCode === 1),
        async close() {
          rpc.close();
        },
      };
    }
    case "check-h2": {
      const clients = new Map<string, H2Client>();
      for (const a of spec.servers) {
        const c = new H2Client(a);
        await c.ready();
        clients.set(a, c);
      }
      let ownerOf = (_k: number) => spec.servers[0]!;
      if (spec.route) {
        const rpc = connect(spec.servers[0]!);
        const view = await rpc.getClusterView({}, { deadlineMs: 3000 });
        rpc.close();
        const routing = Routing.fromView(view, spec.servers[0]!);
        if (typeof routing === "string") throw new Error(routing);
        ownerOf = (k) => routing.ownerOf(keyPoint(names[k]!));
      }
      const owners = names.map((_, k) => clients.get(ownerOf(k)) ?? clients.get(spec.servers[0]!)!);
      const bodies = names.map((key) =>
        Buffer.from(CheckRequestType.encode({ items: [{ key, cost: 1 }] }).finish()),
      );
      return {
        call: (k) =>
          owners[k]!.callAsync(CHECK_PATH, bodies[k]!).then((res) =>
            checkAllowed(CheckResponseType.decode(res) as unknown as CheckResponse),
          ),
        async close() {
          for (const c of clients.values()) c.close();
        },
      };
    }
    case "envoy-h2": {
      const client = new H2Client(spec.address);
      await client.ready();
      const bodies = names.map((_, k) => Buffer.from(RateLimitRequestType.encode(envoyRequest(k)).finish()));
      return {
        call: (k) =>
          client
            .callAsync(SHOULD_RATE_LIMIT_PATH, bodies[k]!)
            .then((res) => (RateLimitResponseType.decode(res) as unknown as EnvoyResponse).overallCode === 1),
        async close() {
          client.close();
        },
      };
    }
    case "check": {
      const rpc = connect(spec.address);
      return {
        call: (k) =>
          rpc.check({ items: [{ key: names[k]!, cost: 1 }] }, { deadlineMs: 5000 }).then(checkAllowed),
        async close() {
          rpc.close();
        },
      };
    }
  }
}
