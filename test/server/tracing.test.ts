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
import type { ReportResponse } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { disableTracing, enableTracing, metadataFor } from "../../src/protocol/tracing.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { startTwoServers, TWO_SERVERS_CONFIG, type TwoServers } from "./two-servers.js";

/**
 * OpenTelemetry spans across a forwarded call: two in-process servers on loopback, A owning no
 * key and forwarding to B, the SDK's in-memory exporter collecting both sides' spans.
 */

describe("OpenTelemetry spans", () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer("test");
  let two: TwoServers;
  let rpc: RateLimiterRpc;
  const bAddress = () => two.bAddress;

  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    two = await startTwoServers();
    rpc = two.rpc;
  });

  afterAll(() => {
    disableTracing();
    two?.stop();
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

  it("serve --otel's wiring: a server started with tracing takes the global provider's tracer", async () => {
    disableTracing();
    trace.setGlobalTracerProvider(provider);
    const server = await startLoopbackServer(writeConfig(TWO_SERVERS_CONFIG), { tracing: true });
    const client = connect(`127.0.0.1:${server.grpcPort}`);
    try {
      await client.check({ items: [{ key: "d/k=7", cost: 1 }] });
    } finally {
      client.close();
      await server.shutdown();
      trace.disable();
    }
    expect(byName("shardlimit.Check").attributes["shardlimit.decision"]).toBe("allowed");
  });

  it("off: no span at all", async () => {
    disableTracing();
    await rpc.check({ items: [{ key: "d/k=4", cost: 1 }] });
    expect(exporter.getFinishedSpans()).toEqual([]);
  });
});
