import { describe, expect, it } from "vitest";
import { decodeEnvoyRequest } from "../../src/protocol/fast-decode.js";
import type { EnvoyRequest } from "../../src/protocol/messages.js";
import { ENVOY_RLS_SERVICE, root, serviceDefinition } from "../../src/protocol/proto.js";

const envoy = serviceDefinition(ENVOY_RLS_SERVICE).ShouldRateLimit!;
const type = root.lookupType("envoy.service.ratelimit.v3.RateLimitRequest");

/** What a handler reads of a request: its fields, descriptors' defaults as protobufjs gives them. */
function seen(r: EnvoyRequest): unknown {
  return {
    domain: r.domain,
    hitsAddend: r.hitsAddend,
    descriptors: r.descriptors.map((d) => ({
      entries: d.entries.map((e) => ({ key: e.key, value: e.value })),
      limit: d.limit ?? null,
      hitsAddend: d.hitsAddend ?? null,
    })),
  };
}

function sameAsProtobufjs(b: Buffer): void {
  const fast = decodeEnvoyRequest(b);
  expect(fast).toBeDefined();
  expect(seen(fast!)).toEqual(seen(type.decode(b) as unknown as EnvoyRequest));
}

describe("decodeEnvoyRequest", () => {
  it("decodes the common shapes as protobufjs does", () => {
    const cases: object[] = [
      {},
      { domain: "bench" },
      { domain: "bench", descriptors: [{ entries: [{ key: "k", value: "a" }] }], hitsAddend: 1 },
      {
        domain: "bench",
        descriptors: [
          {
            entries: [
              { key: "k", value: "a" },
              { key: "priority", value: "low" },
            ],
          },
          { entries: [] },
          {
            entries: [
              { key: "", value: "" },
              { key: "x".repeat(300), value: "y".repeat(200) },
            ],
          },
        ],
        hitsAddend: 4_000_000,
      },
      { domain: "d", descriptors: Array.from({ length: 40 }, (_, i) => ({ entries: [{ key: `k${i}` }] })) },
    ];
    for (const c of cases) sameAsProtobufjs(envoy.requestSerialize(c));
  });

  it("reads repeated fields and long varints as protobufjs does", () => {
    // domain "a" then domain "b" (the last wins), hits_addend 0 in two bytes.
    sameAsProtobufjs(Buffer.from([0x0a, 1, 0x61, 0x0a, 1, 0x62, 0x18, 0x80, 0x00]));
  });

  it("leaves every other shape to protobufjs", () => {
    const other: Buffer[] = [
      envoy.requestSerialize({
        domain: "d",
        descriptors: [{ entries: [], limit: { requestsPerUnit: 5, unit: 1 } }],
      }),
      envoy.requestSerialize({ domain: "d", descriptors: [{ entries: [], hitsAddend: { value: 3 } }] }),
      envoy.requestSerialize({ domain: "d", hitsAddend: 0xffff_ffff }),
      envoy.requestSerialize({ domain: "naïve" }), // not ASCII: protobufjs checks the UTF-8
      Buffer.from([0x0a, 1, 0xff]), // invalid UTF-8, which protobufjs rejects
      Buffer.from([0x20, 1]), // unknown field 4
      Buffer.from([0x0a, 5, 0x61]), // domain cut short
      Buffer.from([0x18, 0x80]), // varint cut short
      Buffer.from([0x12, 2, 0x0a, 5]), // entry longer than its descriptor
    ];
    for (const b of other) expect(decodeEnvoyRequest(b)).toBeUndefined();
  });

  it("is the server's deserializer, with protobufjs behind it", () => {
    const withLimit = { domain: "d", descriptors: [{ entries: [], limit: { requestsPerUnit: 5, unit: 1 } }] };
    const r = envoy.requestDeserialize(envoy.requestSerialize(withLimit)) as EnvoyRequest;
    expect(r.descriptors[0]!.limit).toMatchObject({ requestsPerUnit: 5, unit: 1 });
    const plain = envoy.requestDeserialize(envoy.requestSerialize({ domain: "d" })) as EnvoyRequest;
    expect(Object.getPrototypeOf(plain)).toBe(Object.prototype);
  });
});
