import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { GrpcTransport } from "../../src/client/grpc-transport.js";
import { BatchingForwarder } from "../../src/cluster/forwarder.js";
import { connectPeer } from "../../src/cluster/peers.js";
import { compileSources } from "../../src/config/load.js";
import { systemClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import type { ReportResponse } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { disableTracing, enableTracing, metadataFor } from "../../src/protocol/tracing.js";
import { EnvoyRateLimit } from "../../src/server/envoy.js";
import { type GrpcServer, startGrpc } from "../../src/server/grpc.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import type { Owner, Ownership, OwnershipVerdict } from "../../src/server/ownership.js";
import { PeerService } from "../../src/server/peer-service.js";
import { Router } from "../../src/server/router.js";

/**
 * OpenTelemetry spans across a forwarded call: two in-process servers on loopback, A owning no
 * key and forwarding to B, the SDK's in-memory exporter collecting both sides' spans.
 */

const config = compileSources([
  {
    file: "t.yaml",
    text: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { name: k_rpm, unit: minute, requests_per_unit: 2 }\n",
  },
]);

/** Every key is B's: A forwards, B decides. */
function ownership(self: boolean, owner: () => string): Ownership {
  return {
    generation: () => 1,
    check: (): OwnershipVerdict => (self ? "own" : "not_owner"),
    ownerOf: (): Owner => ({ id: "b", address: owner(), self }),
    changed: () => new Promise<void>(() => {}),
    view: () => ({ generation: 1, members: [], slices: [], standalone: false }),
  } as unknown as Ownership;
}

async function server(own: Ownership, forwarder?: BatchingForwarder): Promise<GrpcServer> {
  const deps = {
    engine: new Engine(),
    clock: systemClock,
    ownership: own,
    limits: DEFAULT_INPUT_LIMITS,
    metrics: noopMetrics,
  };
  const limiter = new Limiter({ ...deps, config });
  const envoy = new EnvoyRateLimit(
    deps,
    (d, e) => config.resolve(d, e),
    () => true,
  );
  const peer = new PeerService({
    limiter,
    envoy,
    ownership: own,
    receiveHandoff: () => ({ accepted: 0, generation: 1 }),
  });
  const router = new Router({ limiter, envoy, ownership: own, clock: systemClock, forwarder });
  return startGrpc(
    {
      limiter,
      router,
      peer,
      maxMessageBytes: DEFAULT_INPUT_LIMITS.maxMessageBytes,
      onUnexpected: (_m, err) => {
        throw err;
      },
    },
    "127.0.0.1",
    0,
  );
}

describe("OpenTelemetry spans", () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer("test");
  let a: GrpcServer;
  let b: GrpcServer;
  let rpc: RateLimiterRpc;
  const peers = new Map<string, ReturnType<typeof connectPeer>>();
  const bAddress = () => `127.0.0.1:${b.port}`;

  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    b = await server(ownership(true, bAddress));
    const forwarder = new BatchingForwarder({
      peer: (address) => {
        let p = peers.get(address);
        if (p === undefined) {
          p = connectPeer(address);
          peers.set(address, p);
        }
        return p;
      },
    });
    a = await server(ownership(false, bAddress), forwarder);
    rpc = connect(`127.0.0.1:${a.port}`);
  });

  afterAll(() => {
    disableTracing();
    rpc?.close();
    for (const p of peers.values()) p.close();
    a?.server.forceShutdown();
    b?.server.forceShutdown();
    context.disable();
    propagation.disable();
  });

  beforeEach(() => {
    exporter.reset();
    enableTracing(tracer);
  });

  const byName = (name: string): ReadableSpan => {
    const found = exporter.getFinishedSpans().filter((s) => s.name === name);
    expect(found, name).toHaveLength(1);
    return found[0]!;
  };
  const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

  it("a forwarded Check: the caller's span -> Check at A -> forward -> Forward at B, with owner and decision", async () => {
    await tracer.startActiveSpan("caller", async (root) => {
      const res = await rpc.check(
        { items: [{ key: "d/k=1", cost: 1 }] },
        { metadata: metadataFor(trace.setSpan(context.active(), root)) },
      );
      expect(res.results[0]!.allowed).toBe(true);
      root.end();
    });
    const caller = byName("caller");
    const check = byName("shardlimit.Check");
    const forward = byName("shardlimit.forward");
    const owner = byName("shardlimit.Forward");
    const traceId = caller.spanContext().traceId;
    for (const s of [check, forward, owner]) expect(s.spanContext().traceId).toBe(traceId);
    expect(parentOf(check)).toBe(caller.spanContext().spanId);
    expect(parentOf(forward)).toBe(check.spanContext().spanId);
    expect(parentOf(owner)).toBe(forward.spanContext().spanId);
    expect(check.attributes["shardlimit.decision"]).toBe("allowed");
    expect(forward.attributes["shardlimit.owner"]).toBe(bAddress());
    expect(forward.attributes["shardlimit.checks"]).toBe(1);
    expect(owner.attributes["shardlimit.checks"]).toBe(1);
  });

  it("ShouldRateLimit over the limit, forwarded: the decision OVER_LIMIT on its span", async () => {
    const call = () =>
      rpc.shouldRateLimit({
        domain: "d",
        descriptors: [{ entries: [{ key: "k", value: "2" }] }],
        hitsAddend: 3,
      });
    expect((await call()).overallCode).toBe(2);
    expect(byName("shardlimit.ShouldRateLimit").attributes["shardlimit.decision"]).toBe("OVER_LIMIT");
    expect(parentOf(byName("shardlimit.Forward"))).toBe(byName("shardlimit.forward").spanContext().spanId);
  });

  it("a gateway's report: its client span is the parent of the owner's ReportAndGetPolicy span", async () => {
    const transport = new GrpcTransport();
    try {
      const res = await new Promise<ReportResponse>((resolve, reject) =>
        transport.report(
          bAddress(),
          {
            clientId: "gw-1/ab",
            seq: 1,
            generation: 1,
            intervalMs: 100,
            keyEpoch: 0,
            spanMs: 100,
            entries: [{ key: "d/k=3", keyHandle: 0, admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 }],
          },
          2000,
          (err, r) => (err ? reject(err) : resolve(r!)),
        ),
      );
      expect(res.policies).toHaveLength(1);
    } finally {
      transport.close();
    }
    const report = byName("shardlimit.report");
    const served = byName("shardlimit.ReportAndGetPolicy");
    expect(parentOf(served)).toBe(report.spanContext().spanId);
    expect(report.attributes["shardlimit.owner"]).toBe(bAddress());
    expect(served.attributes["shardlimit.entries"]).toBe(1);
  });

  it("off: no span at all", async () => {
    disableTracing();
    await rpc.check({ items: [{ key: "d/k=4", cost: 1 }] });
    expect(exporter.getFinishedSpans()).toEqual([]);
  });
});
