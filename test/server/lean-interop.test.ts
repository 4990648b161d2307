import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningServer } from "../../src/app/serve.js";
import { ManualClock } from "../../src/core/clock.js";
import type { CheckRequest, EnvoyResponse } from "../../src/protocol/messages.js";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE, serviceDefinition } from "../../src/protocol/proto.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { T0 } from "./harness.js";

/**
 * The lean transport answering gRPC's C core (Debian's python3-grpcio) as a client: a call with a
 * deadline and metadata, a trailers-only error with its message, an unknown method (grpc-js's,
 * on the same port), and a deadline that runs out. Messages are encoded and decoded here; the
 * Python side sends and receives bytes (no generated code).
 */

const PYTHON = "/usr/bin/python3";
const SCRIPT = `
import grpc, json, sys
target, calls = sys.argv[1], json.loads(sys.argv[2])
ch = grpc.insecure_channel(target)
for c in calls:
    fn = ch.unary_unary(c["path"])
    try:
        res = fn(bytes.fromhex(c["body"]), timeout=c["timeout"], metadata=[("x-test", "interop")])
        print(json.dumps({"code": 0, "body": res.hex()}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().value[0], "details": e.details()}))
`;

const envoy = serviceDefinition(ENVOY_RLS_SERVICE).ShouldRateLimit!;
const check = serviceDefinition(RATE_LIMITER_SERVICE).Check!;
const clock = new ManualClock(T0);
let server: RunningServer;

beforeAll(async () => {
  const config = `
domain: api
descriptors:
  - key: tb
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 10 }
`;
  server = await startLoopbackServer(writeConfig(config), { clock, serve: { transport: "lean" } });
});
afterAll(async () => {
  await server?.shutdown();
});

describe("the lean transport with gRPC's C core as client (python3-grpcio)", () => {
  it("answers calls, errors, unknown methods and deadlines as gRPC says", async () => {
    server.limiter.check({
      items: [{ key: "api/tb=full", cost: 10 }],
      atomic: false,
      generation: 0,
    } as CheckRequest);
    const calls = [
      {
        path: "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        body: envoy
          .requestSerialize({
            domain: "api",
            descriptors: [{ entries: [{ key: "tb", value: "a" }] }, { entries: [{ key: "tb", value: "b" }] }],
          })
          .toString("hex"),
        timeout: 5,
      },
      { path: "/shardlimit.v1.RateLimiter/Check", body: "ffffff", timeout: 5 },
      { path: "/shardlimit.v1.RateLimiter/NoSuchMethod", body: "", timeout: 5 },
      {
        path: "/shardlimit.v1.RateLimiter/Check",
        body: check
          .requestSerialize({ items: [{ key: "api/tb=full", cost: 1, maxWaitMs: 5000 }] })
          .toString("hex"),
        timeout: 0.3,
      },
    ];
    const { stdout } = await promisify(execFile)(
      PYTHON,
      ["-c", SCRIPT, `127.0.0.1:${server.grpcPort}`, JSON.stringify(calls)],
      { timeout: 20_000 },
    );
    const out = stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { code: number; body?: string; details?: string });
    expect(out).toHaveLength(4);
    expect(out[0]!.code).toBe(GrpcStatus.OK);
    const res = envoy.responseDeserialize(Buffer.from(out[0]!.body!, "hex")) as EnvoyResponse;
    expect(res.overallCode).toBe(1);
    expect(res.statuses).toHaveLength(2);
    expect(out[1]).toMatchObject({ code: GrpcStatus.INVALID_ARGUMENT });
    expect(out[1]!.details).toContain("malformed shardlimit.v1.CheckRequest");
    expect(out[2]!.code).toBe(GrpcStatus.UNIMPLEMENTED);
    expect(out[3]!.code).toBe(GrpcStatus.DEADLINE_EXCEEDED);
    expect(server.checkWaits.size).toBe(0);
  }, 30_000);
});
