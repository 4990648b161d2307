import { describe, expect, it } from "vitest";
import { ascii, checkRequestDecoder, decodeEnvoyRequest } from "../../src/protocol/fast-decode.js";
import type { CheckItemMsg, CheckRequest, EnvoyRequest } from "../../src/protocol/messages.js";
import {
  ENVOY_RLS_SERVICE,
  MalformedRequest,
  RATE_LIMITER_SERVICE,
  root,
  serviceDefinition,
} from "../../src/protocol/proto.js";

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

describe("checkRequestDecoder", () => {
  const check = serviceDefinition(RATE_LIMITER_SERVICE).Check!;
  const reqType = root.lookupType("shardlimit.v1.CheckRequest");
  const decode = checkRequestDecoder({
    request: reqType.ctor as unknown as new () => CheckRequest,
    item: root.lookupType("shardlimit.v1.CheckItem").ctor as unknown as new () => CheckItemMsg,
  });
  /** Every field a handler reads, own or from the prototype, and which are own (what a copy keeps). */
  const fields = (o: object) => {
    const r = o as Record<string, unknown>;
    const out: Record<string, unknown> = { own: Object.keys(r).sort(), proto: Object.getPrototypeOf(r) };
    for (const k of ["atomic", "generation", "ticketTimeoutMs", "explain", "caller", "key", "cost"])
      out[k] = r[k];
    for (const k of ["priority", "ticket", "maxWaitMs"]) out[k] = r[k];
    return out;
  };
  const seenCheck = (r: CheckRequest) => ({ ...fields(r), items: r.items.map(fields) });
  const same = (b: Buffer) => {
    const fast = decode(b);
    expect(fast).toBeDefined();
    expect(seenCheck(fast!)).toEqual(seenCheck(reqType.decode(b) as unknown as CheckRequest));
  };

  it("decodes the common shapes as protobufjs does, into its message classes", () => {
    const cases: object[] = [
      {},
      { items: [{ key: "bench/k=c", cost: 1 }] },
      { items: [{ key: "a" }, { key: "", cost: 0.5 }, { key: "x".repeat(300), cost: 1e300 }] },
      {
        items: [
          { key: "a", cost: -0, priority: 3, ticket: true, maxWaitMs: 100 },
          { key: "b", cost: Number.NaN, priority: 1, ticket: false, maxWaitMs: 0 },
        ],
        atomic: true,
        generation: 123_456,
        ticketTimeoutMs: 200_000,
        explain: true,
      },
      { items: [{ key: "k", cost: -5 }], atomic: false, generation: 0, explain: false },
      { items: Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, cost: i })) },
    ];
    for (const c of cases) same(check.requestSerialize(c));
    expect(Object.getPrototypeOf(decode(check.requestSerialize({}))!)).toBe(reqType.ctor.prototype);
  });

  it("reads repeated fields as protobufjs does (the last wins, a default undoes a value)", () => {
    // atomic true then false, explain 1 in a two-byte varint, generation 5 then 7.
    same(Buffer.from([0x10, 1, 0x10, 0, 0x58, 0x81, 0x00, 0x18, 5, 0x18, 7]));
    // one item: key "a" then "", cost 2 then 0, priority 2 then 0.
    const item = [
      0x0a, 1, 0x61, 0x0a, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0x18, 2, 0x18, 0,
    ];
    same(Buffer.from([0x0a, item.length, ...item]));
  });

  it("leaves every other shape to protobufjs", () => {
    const other: Buffer[] = [
      check.requestSerialize({ items: [{ key: "naïve" }] }), // not ASCII
      check.requestSerialize({ items: [{ key: "k", priority: 200 }] }), // two-byte enum
      check.requestSerialize({ items: [{ key: "k", priority: -1 }] }), // ten-byte enum
      check.requestSerialize({ items: [{ key: "k", maxWaitMs: 1000 }] }), // two-byte max_wait_ms
      check.requestSerialize({ items: [{ key: "k" }], generation: 2 ** 40 }), // long generation
      Buffer.from([0x0a, 3, 0x0a, 1, 0xff]), // invalid UTF-8, which protobufjs rejects
      Buffer.from([0x20, 1]), // unknown field 4
      Buffer.from([0x0a, 2, 0x20, 1]), // unknown item field 4
      Buffer.from([0x12, 0]), // atomic with the wrong wire type
      Buffer.from([0x0a, 3, 0x11, 0, 0]), // cost cut short
      Buffer.from([0x0a, 5, 0x0a, 1]), // item longer than the message
      Buffer.from([0x18, 0x80]), // varint cut short
    ];
    for (const b of other) expect(decode(b)).toBeUndefined();
  });

  it("is the server's deserializer, with protobufjs behind it", () => {
    const r = check.requestDeserialize(
      check.requestSerialize({ items: [{ key: "k", priority: -1 }] }),
    ) as CheckRequest;
    expect(r.items[0]!.priority).toBe(-1);
    const bad = check.requestDeserialize(Buffer.from([0x0a, 3, 0x0a, 1, 0xff]));
    expect(bad).toBeInstanceOf(MalformedRequest);
    const plain = check.requestDeserialize(
      check.requestSerialize({ items: [{ key: "k", cost: 2 }] }),
    ) as CheckRequest;
    expect(seenCheck(plain)).toEqual(
      seenCheck(
        reqType.decode(check.requestSerialize({ items: [{ key: "k", cost: 2 }] })) as unknown as CheckRequest,
      ),
    );
  });
});

describe("ascii (the decoders' string reader, with its table of short strings)", () => {
  it("reads every ASCII string as latin1 does, whatever the table held before", () => {
    // Many more distinct short strings than the table has slots, so strings of one length meet in
    // a slot; each read twice, so the second read finds what the table kept.
    let seed = 7;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const bufs: Buffer[] = [];
    for (let i = 0; i < 20_000; i++) {
      const len = rnd(4) === 0 ? 60 + rnd(10) : rnd(8); // some longer than the table keeps
      bufs.push(Buffer.from(Array.from({ length: len }, () => 0x61 + rnd(26))));
    }
    for (const b of bufs) {
      for (let twice = 0; twice < 2; twice++) {
        // Read from inside a larger buffer, as the decoders do.
        const outer = Buffer.concat([Buffer.from([0x7a]), b, Buffer.from([0x7a])]);
        expect(ascii(outer, 1, 1 + b.length)).toBe(b.toString("latin1"));
      }
    }
  });

  it("refuses any byte over 0x7f, short or long", () => {
    expect(ascii(Buffer.from([0x61, 0x80]), 0, 2)).toBeUndefined();
    expect(ascii(Buffer.from([0xc3, 0xa9]), 0, 2)).toBeUndefined();
    const long = Buffer.alloc(100, 0x61);
    long[99] = 0xff;
    expect(ascii(long, 0, 100)).toBeUndefined();
    expect(ascii(long, 0, 99)).toBe("a".repeat(99));
  });
});
