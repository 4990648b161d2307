import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { ReportRequest } from "../../src/protocol/messages.js";
import { root } from "../../src/protocol/proto.js";
import {
  decodeReportRequest,
  encodeReportResponse,
  frameReportResponse,
  ReportDecodeError,
} from "../../src/protocol/report-codec.js";

const RequestType = root.lookupType("shardlimit.v1.ReportRequest");
const ResponseType = root.lookupType("shardlimit.v1.ReportResponse");

/** A decoded request as plain fields (protobufjs's defaults live on its prototype). */
function plain(r: ReportRequest) {
  return {
    clientId: r.clientId,
    seq: r.seq,
    generation: r.generation,
    intervalMs: r.intervalMs,
    keyEpoch: r.keyEpoch,
    spanMs: r.spanMs ?? 0,
    entries: r.entries.map((e) => ({
      key: e.key,
      keyHandle: e.keyHandle ?? 0,
      admitted: e.admitted,
      rejected: e.rejected,
      held: e.held,
      windowAdmitted: e.windowAdmitted,
      refunded: e.refunded ?? 0,
    })),
  };
}

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u53 = fc.maxSafeNat();
const dbl = fc.oneof(fc.double(), fc.constantFrom(0, 1, -1, 1e300, Number.NaN, Number.POSITIVE_INFINITY));
const str = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }), fc.constantFrom("", "bench/k=1"));
const entry = fc.record(
  {
    key: str,
    keyHandle: u32,
    admitted: dbl,
    rejected: dbl,
    held: dbl,
    windowAdmitted: dbl,
    refunded: dbl,
  },
  { requiredKeys: [] },
);
const request = fc.record(
  {
    clientId: str,
    seq: u53,
    generation: u53,
    intervalMs: u32,
    entries: fc.array(entry, { maxLength: 20 }),
    keyEpoch: u32,
    spanMs: u32,
  },
  { requiredKeys: [] },
);
const itemError = fc.record({ code: fc.integer({ min: -5, max: 40 }), message: str }, { requiredKeys: [] });
const policy = fc.record(
  {
    kind: fc.integer({ min: -3, max: 4 }),
    units: dbl,
    fraction: dbl,
    validMs: u32,
    remaining: dbl,
    limit: dbl,
    resetMs: u32,
    error: itemError,
    keyHandle: u32,
    gateways: u32,
    sharePerS: dbl,
  },
  { requiredKeys: [] },
);
const response = fc.record(
  {
    generation: fc.oneof(u53, fc.integer({ min: -1000, max: -1 })),
    policies: fc.array(policy, { maxLength: 30 }),
    duplicate: fc.boolean(),
    keyEpoch: u32,
    configVersion: str,
    incarnation: str,
    tooOld: fc.boolean(),
  },
  { requiredKeys: [] },
);

describe("the hand-written ReportAndGetPolicy codec", () => {
  it("decodes every request as protobufjs does", () => {
    fc.assert(
      fc.property(request, (r) => {
        const bytes = Buffer.from(RequestType.encode(r).finish());
        expect(plain(decodeReportRequest(bytes))).toEqual(
          plain(RequestType.decode(bytes) as unknown as ReportRequest),
        );
      }),
      { numRuns: 500 },
    );
  });

  it("encodes every response to protobufjs's bytes", () => {
    fc.assert(
      fc.property(response, (m) => {
        const want = Buffer.from(ResponseType.encode(m).finish());
        expect(encodeReportResponse(m as never).equals(want)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it("frames every response as gRPC does: a zero byte, the length big-endian, protobufjs's bytes", () => {
    fc.assert(
      fc.property(response, (m) => {
        const body = Buffer.from(ResponseType.encode(m).finish());
        const head = Buffer.alloc(5);
        head.writeUInt32BE(body.length, 1);
        expect(frameReportResponse(m as never).equals(Buffer.concat([head, body]))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("encodes policies of 128 bytes and more (a long item error) and a growing response as protobufjs", () => {
    for (const length of [100, 127, 128, 200, 20_000, 70_000]) {
      const m = {
        generation: 3,
        policies: [
          { kind: 1, validMs: 300, limit: 10 },
          { error: { code: 4, message: "x".repeat(length) }, kind: -2, units: 1.5 },
          ...Array.from({ length: 3000 }, (_, i) => ({
            kind: 3,
            units: i,
            fraction: 0.25,
            keyHandle: i + 1,
          })),
        ],
        keyEpoch: 9,
        configVersion: "v".repeat(length),
        incarnation: "abc",
      };
      const want = Buffer.from(ResponseType.encode(m).finish());
      expect(encodeReportResponse(m as never).equals(want), `message of ${length}`).toBe(true);
    }
  });

  it("skips unknown fields of every wire type, as protobufjs does", () => {
    const known = Buffer.from(
      RequestType.encode({ clientId: "gw", seq: 3, entries: [{ key: "a", admitted: 2 }] }).finish(),
    );
    // field 20 varint, 21 fixed64, 22 bytes, 23 fixed32, 24 group (start + end) — then the known bytes
    const unknown = Buffer.from([
      0xa0, 0x01, 0x96, 0x01, 0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xb2, 0x01, 2, 0xff, 0xee, 0xbd, 0x01, 1, 2,
      3, 4, 0xc3, 0x01, 0xc4, 0x01,
    ]);
    const bytes = Buffer.concat([unknown, known]);
    expect(plain(decodeReportRequest(bytes))).toEqual(
      plain(RequestType.decode(bytes) as unknown as ReportRequest),
    );
  });

  it("refuses truncated requests wherever protobufjs does, saying where", () => {
    const whole = Buffer.from(
      RequestType.encode({
        clientId: "gw-1",
        seq: 300,
        entries: [
          { key: "bench/k=1", admitted: 1.5, keyHandle: 70000 },
          { key: "bench/k=2", rejected: 3 },
        ],
        keyEpoch: 9,
      }).finish(),
    );
    for (let n = 0; n < whole.length; n++) {
      const cut = whole.subarray(0, n);
      let theirs: unknown;
      try {
        theirs = RequestType.decode(cut);
      } catch (err) {
        theirs = err;
      }
      if (!(theirs instanceof Error)) continue;
      expect(() => decodeReportRequest(cut), `cut at ${n}`).toThrow(ReportDecodeError);
      expect(() => decodeReportRequest(cut)).toThrow(/at offset \d+/);
    }
  });

  it("refuses a known field with the wrong wire type, an over-long varint and field number 0", () => {
    // seq (field 2) sent as a length-delimited field
    expect(() => decodeReportRequest(Buffer.from([0x12, 0x01, 0x00]))).toThrow(
      "field 2 has wire type 2, expected 0 at offset 1",
    );
    // an entry's admitted (field 2, double) sent as a varint
    expect(() => decodeReportRequest(Buffer.from([0x2a, 0x02, 0x10, 0x01]))).toThrow(
      "field 2 has wire type 0, expected 1",
    );
    expect(() => decodeReportRequest(Buffer.from([0x10, ...new Array(10).fill(0xff), 0x01]))).toThrow(
      "varint longer than 10 bytes",
    );
    expect(() => decodeReportRequest(Buffer.from([0x00, 0x01]))).toThrow("field number 0");
    expect(() => decodeReportRequest(Buffer.from([0xa7, 0x01]))).toThrow("invalid wire type 7");
    // an entry whose length runs past the request
    expect(() => decodeReportRequest(Buffer.from([0x2a, 0x05, 0x10]))).toThrow("runs past the end");
  });

  it("reads 64-bit varints as protobufjs does without Long", () => {
    for (const seq of [0, 1, 127, 128, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 35 + 5, Number.MAX_SAFE_INTEGER]) {
      const bytes = Buffer.from(RequestType.encode({ seq, generation: seq }).finish());
      const got = decodeReportRequest(bytes);
      expect([got.seq, got.generation]).toEqual([seq, seq]);
    }
  });
});
