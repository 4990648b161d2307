import { describe, expect, it } from "vitest";
import { frameCheckResponse, frameEnvoyResponse } from "../../src/protocol/fast-encode.js";
import type { CheckResponse, EnvoyResponse } from "../../src/protocol/messages.js";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE, serviceDefinition } from "../../src/protocol/proto.js";

const envoy = serviceDefinition(ENVOY_RLS_SERVICE).ShouldRateLimit!;
const check = serviceDefinition(RATE_LIMITER_SERVICE).Check!;

/** The framed answer's message, decoded by protobufjs; the prefix must say its length, uncompressed. */
function unframe(frame: Buffer): Buffer {
  expect(frame[0]).toBe(0);
  expect(frame.readUInt32BE(1)).toBe(frame.length - 5);
  return frame.subarray(5);
}

/** Both encodings decode to the same message (as plain objects, defaults included). */
function sameAs(def: typeof envoy, fast: Buffer | undefined, m: object): void {
  expect(fast).toBeDefined();
  const a = def.responseDeserialize(unframe(fast!)) as { toJSON(): unknown };
  const b = def.responseDeserialize(def.responseSerialize(m)) as { toJSON(): unknown };
  expect(a.toJSON()).toEqual(b.toJSON());
}

describe("frameEnvoyResponse", () => {
  it("encodes ShouldRateLimit's answers as protobufjs does", () => {
    const cases: EnvoyResponse[] = [
      { overallCode: 1, statuses: [] },
      { overallCode: 0, statuses: [{ code: 1 }, { code: 1, limitRemaining: 0xffff_ffff }] },
      {
        overallCode: 2,
        statuses: [
          {
            code: 2,
            currentLimit: { name: "", requestsPerUnit: 1_000_000, unit: 1 },
            limitRemaining: 0,
            durationUntilReset: { seconds: 3600 * 24 * 365, nanos: 0 },
          },
          {
            code: 1,
            currentLimit: { name: "naïve – limit ✓", requestsPerUnit: 4_294_967_295, unit: 7 },
            limitRemaining: 127,
            durationUntilReset: { seconds: 128, nanos: 999_999_999 },
          },
        ],
      },
    ];
    for (const c of cases) sameAs(envoy, frameEnvoyResponse(c), c);
  });

  it("leaves headers, metadata and numbers it cannot write exactly to protobufjs", () => {
    const st = { code: 1, limitRemaining: 5 };
    expect(
      frameEnvoyResponse({
        overallCode: 1,
        statuses: [st],
        responseHeadersToAdd: [{ key: "a", value: "b" }],
      }),
    ).toBeUndefined();
    expect(
      frameEnvoyResponse({ overallCode: 1, statuses: [st], dynamicMetadata: { fields: {} } }),
    ).toBeUndefined();
    expect(
      frameEnvoyResponse({ overallCode: 1, statuses: [{ code: 1, limitRemaining: 1.5 }] }),
    ).toBeUndefined();
    expect(
      frameEnvoyResponse({ overallCode: 1, statuses: [{ code: 1, limitRemaining: -1 }] }),
    ).toBeUndefined();
    expect(
      frameEnvoyResponse({
        overallCode: 1,
        statuses: [{ code: 1, durationUntilReset: { seconds: -1, nanos: 0 } }],
      }),
    ).toBeUndefined();
    // An empty header list is no header: encoded here.
    sameAs(envoy, frameEnvoyResponse({ overallCode: 1, statuses: [st], responseHeadersToAdd: [] }), {
      overallCode: 1,
      statuses: [st],
    });
  });
});

describe("frameCheckResponse", () => {
  it("encodes Check's answers as protobufjs does", () => {
    const cases: CheckResponse[] = [
      { generation: 0, results: [] },
      {
        generation: 2 ** 40 + 3,
        results: [
          { allowed: true, remaining: 999_999, limit: 1_000_000, resetMs: 0 },
          {
            allowed: false,
            shadowed: true,
            remaining: -0.25,
            limit: 1e300,
            resetMs: 4_294_967_295,
            retryMs: 300,
            rule: "bench/k",
            ticketId: "t-1",
            explanation: "über the limit",
          },
          {},
        ],
      },
    ];
    for (const c of cases) sameAs(check, frameCheckResponse(c), c);
  });

  it("leaves item errors and numbers it cannot write exactly to protobufjs", () => {
    expect(
      frameCheckResponse({ generation: 1, results: [{ error: { code: 3, message: "x" } }] }),
    ).toBeUndefined();
    expect(frameCheckResponse({ generation: 1, results: [{ resetMs: 2 ** 32 }] })).toBeUndefined();
    expect(frameCheckResponse({ generation: -1, results: [] })).toBeUndefined();
  });
});
