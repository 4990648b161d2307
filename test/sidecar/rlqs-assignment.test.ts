import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import type { ClientTransport } from "../../src/client/transport.js";
import { parseRlqsConfig } from "../../src/config/rlqs.js";
import { systemClock } from "../../src/core/clock.js";
import { PolicyKind } from "../../src/core/policy.js";
import { assignmentOf, BlanketRule, durationOf, type RlqsCall, RlqsService } from "../../src/sidecar/rlqs.js";

describe("an owner's policy as an RLQS assignment", () => {
  const now = 10_000;
  it("ALLOW is ALLOW_ALL and REJECT_UNTIL is DENY_ALL, for the policy's remaining life", () => {
    expect(assignmentOf({ kind: PolicyKind.ALLOW, granted: 0, until: now + 300 }, now, 100)).toEqual({
      strategy: { blanketRule: BlanketRule.ALLOW_ALL },
      ttlMs: 300,
    });
    expect(assignmentOf({ kind: PolicyKind.REJECT_UNTIL, granted: 0, until: now + 250 }, now, 100)).toEqual({
      strategy: { blanketRule: BlanketRule.DENY_ALL },
      ttlMs: 250,
    });
  });

  it("GRANT and REJECT_FRACTION are a token bucket of one interval's grant, refilled by it each interval, for ten intervals at least", () => {
    for (const kind of [PolicyKind.GRANT, PolicyKind.REJECT_FRACTION]) {
      expect(assignmentOf({ kind, granted: 49.6, until: now + 300 }, now, 100)).toEqual({
        strategy: {
          tokenBucket: {
            maxTokens: 50,
            tokensPerFill: { value: 50 },
            fillInterval: { seconds: 0, nanos: 100_000_000 },
          },
        },
        ttlMs: 1000,
      });
    }
    // A light sender's grant lasts longer still (its policy's own life).
    expect(assignmentOf({ kind: PolicyKind.GRANT, granted: 3, until: now + 5000 }, now, 100).ttlMs).toBe(
      5000,
    );
    // Two buckets of one stream on one counter share its grant.
    expect(
      assignmentOf({ kind: PolicyKind.GRANT, granted: 50, until: now + 300 }, now, 100, 2).strategy
        .tokenBucket?.maxTokens,
    ).toBe(25);
  });

  it("a grant under one request per interval is DENY_ALL until the next interval", () => {
    expect(assignmentOf({ kind: PolicyKind.GRANT, granted: 0.4, until: now + 300 }, now, 100)).toEqual({
      strategy: { blanketRule: BlanketRule.DENY_ALL },
      ttlMs: 100,
    });
  });

  it("durations are whole seconds and nanoseconds", () => {
    expect(durationOf(2500)).toEqual({ seconds: 2, nanos: 500_000_000 });
    expect(durationOf(0)).toEqual({ seconds: 0, nanos: 0 });
  });
});

describe("an RLQS stream before its gateway client knows the limits", () => {
  it("holds up to 64 reports, then ends the stream RESOURCE_EXHAUSTED saying why", () => {
    // A transport that never answers: the stream's gateway client never becomes ready.
    const silent: ClientTransport = {
      report() {},
      check() {},
      clusterView() {},
      limits() {},
      drop() {},
      close() {},
    };
    const service = new RlqsService({
      config: parseRlqsConfig(
        "r.yaml",
        "rlqs:\n  mappings:\n    - { domain: envoy, descriptors: [{ key: k, bucket_key: k }] }\n",
      ),
      servers: () => ["127.0.0.1:1"],
      transport: silent,
      clock: systemClock,
      log: { warn() {}, info() {} },
      readyTimeoutMs: 60_000,
    });
    const errors: { code: number; details: string }[] = [];
    const call = Object.assign(new EventEmitter(), { write() {}, end() {} });
    call.on("error", (e) => errors.push(e));
    service.handle(call as unknown as RlqsCall);
    const report = {
      domain: "envoy",
      bucketQuotaUsages: [{ bucketId: { bucket: { k: "v" } }, numRequestsAllowed: 1 }],
    };
    for (let i = 0; i < 64; i++) call.emit("data", report);
    expect(errors).toEqual([]);
    expect(service.openStreams).toBe(1);
    call.emit("data", report);
    expect(errors).toEqual([
      {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: expect.stringMatching(/^64 reports arrived before this server knew the limits/),
      },
    ]);
    expect(service.openStreams).toBe(0);
    service.close();
  });
});
