import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import type { ReportRequest } from "../../src/protocol/messages.js";
import { root } from "../../src/protocol/proto.js";
import { DecodedReport, decodeReportRequest, encodeReportResponse } from "../../src/protocol/report-codec.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import { StandaloneOwnership } from "../../src/server/ownership.js";
import { API_CONFIG } from "./api-config.js";

/**
 * The report path from the wire (the decoder's columns in, the answer's rows out) against the
 * same Limiter fed protobufjs's decoded objects: twin Limiters on one clock take the same
 * requests, one each way, and must give the same policies, the same bytes and the same counts.
 */

const RequestType = root.lookupType("shardlimit.v1.ReportRequest");

const KEYS = [
  "api/fw=a",
  "api/fw=b",
  "api/tb=a",
  "api/sw=a",
  "api/conc=a",
  "api/group=g/tenant=t1",
  "api/group=g/tenant=t2",
  "api/free=x",
  "api/shadow=s",
  "api/nolimit=z",
  "bad key with spaces",
  "",
];

function twin(clock: ManualClock): Limiter {
  const l = new Limiter({
    engine: new Engine(),
    clock,
    config: compileSources([{ file: "c.yaml", text: API_CONFIG }]),
    ownership: new StandaloneOwnership("self:1", clock),
    limits: DEFAULT_INPUT_LIMITS,
    metrics: noopMetrics,
  });
  // Random per process and per key table: the same in both, so their answers' bytes compare
  // whole and a handle one issued names the same key in the other.
  (l as unknown as { incarnation: string }).incarnation = "twin";
  (l as unknown as { resolver: { epoch: number } }).resolver.epoch = 77;
  return l;
}

const amount = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom(Number.NaN, -1, 1e300, Number.POSITIVE_INFINITY, 0.5, -0) },
);
const entry = fc.record({
  key: fc.nat({ max: KEYS.length - 1 }),
  /** 0: by its key string; else a handle, right (from an earlier answer) or made up. */
  handle: fc.oneof(fc.constant(0), fc.constant(-1), fc.nat({ max: 40 })),
  admitted: amount,
  rejected: amount,
  held: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 3 })),
  windowAdmitted: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: amount }),
  refunded: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: amount }),
});
const report = fc.record({
  client: fc.constantFrom("gw-1", "gw-2", "gw-3"),
  /** A repeat of the last seq sent (a duplicate) now and then. */
  repeat: fc.boolean(),
  stepMs: fc.integer({ min: 0, max: 3000 }),
  intervalMs: fc.constantFrom(0, 100, 1000),
  // Now and then past READ_AHEAD_ENTRIES (64) and twice it: the handler reads ahead in chunks.
  entries: fc.oneof(
    { weight: 9, arbitrary: fc.array(entry, { minLength: 1, maxLength: 30 }) },
    { weight: 1, arbitrary: fc.array(entry, { minLength: 60, maxLength: 150, size: "max" }) },
  ),
});

describe("the report path from the wire's columns", () => {
  it("answers, encodes and counts as with decoded objects", () => {
    fc.assert(
      fc.property(fc.array(report, { minLength: 1, maxLength: 25 }), (reports) => {
        const clock = new ManualClock(1_000_000);
        const plain = twin(clock);
        const wire = twin(clock);
        const seqs = new Map<string, number>();
        /** Handles the twins answered, by key index (the same in both: checked below). */
        const handles = new Map<number, { epoch: number; handle: number }>();
        for (const r of reports) {
          clock.advance(r.stepMs);
          const last = seqs.get(r.client) ?? 0;
          const seq = r.repeat && last > 0 ? last : last + 1;
          seqs.set(r.client, seq);
          let keyEpoch = 0;
          const entries = r.entries.map((e) => {
            const known = handles.get(e.key);
            const counts = {
              admitted: e.admitted,
              rejected: e.rejected,
              held: e.held,
              windowAdmitted: e.windowAdmitted,
              refunded: e.refunded,
            };
            if (e.handle === 0 || (e.handle === -1 && known === undefined))
              return { key: KEYS[e.key]!, ...counts };
            if (e.handle === -1 && known !== undefined) {
              keyEpoch = known.epoch;
              return { keyHandle: known.handle, ...counts };
            }
            return { keyHandle: e.handle, ...counts };
          });
          const bytes = Buffer.from(
            RequestType.encode({
              clientId: r.client,
              seq,
              intervalMs: r.intervalMs,
              keyEpoch,
              entries,
            }).finish(),
          );
          const decoded = decodeReportRequest(bytes);
          expect(decoded).toBeInstanceOf(DecodedReport);
          const a = plain.reportAndGetPolicy(RequestType.decode(bytes) as unknown as ReportRequest);
          const b = wire.reportAndGetPolicy(decoded);
          expect(b.policies).toEqual(a.policies);
          expect(encodeReportResponse(b).equals(encodeReportResponse(a))).toBe(true);
          expect([b.generation, b.duplicate, b.keyEpoch, b.configVersion, b.tooOld ?? false]).toEqual([
            a.generation,
            a.duplicate,
            a.keyEpoch,
            a.configVersion,
            a.tooOld ?? false,
          ]);
          a.policies.forEach((p, i) => {
            if (p.keyHandle) handles.set(r.entries[i]!.key, { epoch: a.keyEpoch, handle: p.keyHandle });
          });
        }
        for (const key of KEYS.slice(0, 7)) {
          expect(wire.inspect(key).counters).toEqual(plain.inspect(key).counters);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("gives the entries as objects when asked, the same as protobufjs's", () => {
    const bytes = Buffer.from(
      RequestType.encode({
        clientId: "gw",
        seq: 4,
        entries: [
          { key: "api/fw=a", admitted: 2, rejected: 1, held: 0, windowAdmitted: 7, refunded: 0.5 },
          { keyHandle: 9, admitted: Number.NaN },
        ],
      }).finish(),
    );
    const d = decodeReportRequest(bytes);
    expect(d.count).toBe(2);
    expect(d.entries).toEqual([
      { key: "api/fw=a", keyHandle: 0, admitted: 2, rejected: 1, held: 0, windowAdmitted: 7, refunded: 0.5 },
      { key: "", keyHandle: 9, admitted: Number.NaN, rejected: 0, held: 0, windowAdmitted: 0, refunded: 0 },
    ]);
    // Two requests decoded one after the other keep their own numbers.
    const other = decodeReportRequest(
      Buffer.from(
        RequestType.encode({ clientId: "gw", seq: 5, entries: [{ keyHandle: 3, admitted: 1 }] }).finish(),
      ),
    );
    expect(other.entries[0]!.keyHandle).toBe(3);
    expect(d.entries[1]!.keyHandle).toBe(9);
    expect(d.numbers[0 + 6]).toBe(9);
  });
});
