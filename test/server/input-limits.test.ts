import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { seededRandom as prng } from "../../src/core/random.js";
import { InputLimitsSchema } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { ReportEntryMsg } from "../../src/protocol/messages.js";
import { rawMethod } from "../../src/testkit/fuzz.js";
import { callError, desc, peek, T0, type TestServer, useTestServer } from "./harness.js";

/**
 * Invariant 8: bad input gets a clear error and changes nothing, and no input crashes the server.
 * Request-level problems are gRPC statuses naming the bound; per-item problems are item errors
 * inside an otherwise answered batch. After every rejection the counters are checked unchanged.
 */

const CONFIG = `
domain: api
descriptors:
  - key: fw
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: tb
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 10 }
  - key: conc
    rate_limit: { algorithm: concurrency, requests_per_unit: 2 }
`;

const LIMITS = InputLimitsSchema.parse({
  maxBatch: 5,
  maxKeyLength: 64,
  maxAmount: 1000,
  maxMessageBytes: 64 * 1024,
  maxDescriptorEntries: 4,
  maxIdLength: 32,
  maxIntervalMs: 5000,
});

describe("input limits over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  let seq = 0;

  useTestServer(CONFIG, { clock, limits: LIMITS }, (s) => {
    t = s;
  });

  const remaining = (key: string) => peek(t, key, clock.now())?.remaining;

  /** Runs `rejected` and asserts the counters and report-dedup state are just as before. */
  async function changesNothing(keys: string[], rejected: () => Promise<void>): Promise<void> {
    const before = keys.map(remaining);
    const counters = t.server.engine.size;
    const clients = t.server.engine.clients;
    await rejected();
    expect(keys.map(remaining)).toEqual(before);
    expect(t.server.engine.size).toBe(counters);
    expect(t.server.engine.clients).toBe(clients);
  }

  async function expectStatus(p: Promise<unknown>, code: grpc.status, details: RegExp): Promise<void> {
    const err = await callError(p);
    expect(grpc.status[err.code]).toBe(grpc.status[code]);
    expect(err.details).toMatch(details);
  }

  const good = (key = "api/fw=good"): Partial<ReportEntryMsg> => ({ key, admitted: 1 });
  const report = (req: {
    clientId?: string;
    seq?: number;
    intervalMs?: number;
    entries?: Partial<ReportEntryMsg>[];
  }) =>
    t.rpc.reportAndGetPolicy({
      clientId: req.clientId ?? "gw",
      seq: req.seq ?? ++seq,
      intervalMs: req.intervalMs ?? 100,
      entries: (req.entries ?? [good()]) as ReportEntryMsg[],
    });

  describe("request-level errors: INVALID_ARGUMENT naming the bound, nothing applied", () => {
    it("empty client_id", async () => {
      await changesNothing(["api/fw=good"], () =>
        expectStatus(report({ clientId: "" }), grpc.status.INVALID_ARGUMENT, /client_id is empty/),
      );
    });

    it("client_id over the maximum length", async () => {
      await changesNothing(["api/fw=good"], () =>
        expectStatus(
          report({ clientId: "x".repeat(33) }),
          grpc.status.INVALID_ARGUMENT,
          /client_id is 33 long, over the maximum of 32/,
        ),
      );
    });

    it("seq 0, and a seq beyond 2^53", async () => {
      await changesNothing(["api/fw=good"], async () => {
        await expectStatus(
          report({ seq: 0 }),
          grpc.status.INVALID_ARGUMENT,
          /seq must be a positive integer/,
        );
        await expectStatus(report({ seq: 2 ** 60 }), grpc.status.INVALID_ARGUMENT, /seq must be a positive/);
      });
    });

    it("interval_ms over maxIntervalMs (it sets how long a silent gateway's state is kept)", async () => {
      await changesNothing(["api/fw=good"], () =>
        expectStatus(
          report({ intervalMs: 5001 }),
          grpc.status.INVALID_ARGUMENT,
          /interval_ms 5001 is over the maximum of maxIntervalMs 5000/,
        ),
      );
    });

    it("a report over the batch maximum; the same (client_id, seq) is then still new", async () => {
      const s = ++seq;
      await changesNothing(["api/fw=good"], () =>
        expectStatus(
          report({ seq: s, entries: Array.from({ length: 6 }, () => good()) }),
          grpc.status.INVALID_ARGUMENT,
          /report has 6 items, over the maximum of 5/,
        ),
      );
      const ok = await report({ seq: s, entries: [good("api/fw=batch")] });
      expect(ok.duplicate).toBe(false);
      expect(remaining("api/fw=batch")).toBe(9);
    });

    it("a check over the batch maximum", async () => {
      await changesNothing(["api/fw=c"], () =>
        expectStatus(
          t.rpc.check({ items: Array.from({ length: 6 }, () => ({ key: "api/fw=c", cost: 1 })) }),
          grpc.status.INVALID_ARGUMENT,
          /check has 6 items, over the maximum of 5/,
        ),
      );
    });

    it("a lease id over the maximum length", async () => {
      await changesNothing(["api/conc=l"], async () => {
        await expectStatus(
          t.rpc.acquire({ key: "api/conc=l", leaseId: "l".repeat(33) }),
          grpc.status.INVALID_ARGUMENT,
          /lease_id is 33 long, over the maximum of 32/,
        );
      });
    });
  });

  describe("per-item errors: the batch is answered, bad items change nothing", () => {
    const BAD_KEYS: [string, RegExp][] = [
      ["", /key is empty/],
      [`api/fw=${"k".repeat(60)}`, /key is 67 long, over the maximum of 64/],
      ["api", /no descriptor entries/],
      ["api/fw", /not key=value/],
      ["/fw=x", /empty domain/],
    ];
    const BAD_AMOUNTS: [number, RegExp][] = [
      [-1, /is negative \(-1\)/],
      [Number.NaN, /is not a number/],
      [Number.POSITIVE_INFINITY, /Infinity exceeds the maximum of 1000/],
      [Number.NEGATIVE_INFINITY, /is negative/],
      [1e15, /exceeds the maximum of 1000/],
      [1000.5, /exceeds the maximum of 1000/],
    ];

    it("Check: bad keys are INVALID_KEY, each on its own", async () => {
      for (const [key, why] of BAD_KEYS) {
        await changesNothing(["api/fw=i1"], async () => {
          const res = await t.rpc.check({ items: [{ key, cost: 1 }] });
          expect(res.results[0]!.error?.code).toBe(ErrorCode.INVALID_KEY);
          expect(res.results[0]!.error?.message).toMatch(why);
          expect(res.results[0]!.allowed).toBe(false);
        });
      }
    });

    it("Check: negative, NaN, infinite and absurd costs are INVALID_AMOUNT, next to a good item", async () => {
      clock.set(T0);
      for (const [cost, why] of BAD_AMOUNTS) {
        const before = remaining("api/fw=i2");
        const res = await t.rpc.check({
          items: [
            { key: "api/fw=i2", cost },
            { key: "api/fw=i3", cost: 1 },
          ],
        });
        expect(res.results[0]!.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
        expect(res.results[0]!.error?.message).toMatch(why);
        expect(res.results[1]).toMatchObject({ allowed: true });
        expect(remaining("api/fw=i2")).toBe(before);
      }
      // The maximum itself is a valid cost (over this limit, so simply not allowed).
      const max = await t.rpc.check({ items: [{ key: "api/fw=i2", cost: 1000 }] });
      expect(max.results[0]!.error ?? null).toBeNull();
      expect(max.results[0]).toMatchObject({ allowed: false, retryMs: 0 });
    });

    it("ReportAndGetPolicy: bad keys and amounts are per-item errors; nothing of theirs is applied", async () => {
      clock.set(T0);
      const entries: Partial<ReportEntryMsg>[] = [
        ...BAD_KEYS.slice(0, 2).map(([key]) => ({ key, admitted: 1 })),
        ...BAD_AMOUNTS.slice(0, 4).map(([admitted]) => ({ key: "api/fw=i4", admitted })),
      ];
      expect(entries.length).toBeLessThanOrEqual(LIMITS.maxBatch + 1);
      await changesNothing(["api/fw=i4"], async () => {
        const res = await report({ entries: entries.slice(0, 5) });
        expect(res.duplicate).toBe(false);
        expect(res.policies.map((p) => p.error?.code)).toEqual([
          ErrorCode.INVALID_KEY,
          ErrorCode.INVALID_KEY,
          ErrorCode.INVALID_AMOUNT,
          ErrorCode.INVALID_AMOUNT,
          ErrorCode.INVALID_AMOUNT,
        ]);
      });
      for (const field of ["rejected", "held", "windowAdmitted"] as const) {
        const res = await report({ entries: [{ key: "api/fw=i4", admitted: 1, [field]: 1e15 }] });
        expect(res.policies[0]!.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
        expect(remaining("api/fw=i4")).toBe(10);
      }
    });

    it("Acquire, Release and Settle: bad keys and amounts are item errors", async () => {
      await changesNothing(["api/conc=i5", "api/fw=i5"], async () => {
        for (const amount of [-1, Number.NaN, 1e15]) {
          const a = await t.rpc.acquire({ key: "api/conc=i5", leaseId: "x", amount });
          expect(a.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
          expect(a.allowed).toBe(false);
        }
        const k = await t.rpc.acquire({ key: "api/conc", leaseId: "x" });
        expect(k.error?.code).toBe(ErrorCode.INVALID_KEY);
        const r = await t.rpc.release({ key: "", leaseId: "x" });
        expect(r.error?.code).toBe(ErrorCode.INVALID_KEY);
        for (const delta of [Number.NaN, Number.POSITIVE_INFINITY, -1e15, 1e15]) {
          const s = await t.rpc.settle({ key: "api/fw=i5", delta });
          expect(s.error?.code).toBe(ErrorCode.INVALID_AMOUNT);
          expect(s.error?.message).toMatch(/not within ±1000/);
        }
        const sk = await t.rpc.settle({ key: "x".repeat(65), delta: 1 });
        expect(sk.error?.code).toBe(ErrorCode.INVALID_KEY);
      });
    });
  });

  describe("ShouldRateLimit: INVALID_ARGUMENT, nothing counted", () => {
    const envoy = (descriptors: ReturnType<typeof desc>[], hitsAddend = 0) =>
      t.rpc.shouldRateLimit({ domain: "api", descriptors, hitsAddend });

    it("too many entries in a descriptor", async () => {
      await changesNothing(["api/fw=e1"], () =>
        expectStatus(
          envoy([desc("fw=e1"), desc("a=1", "b=2", "c=3", "d=4", "e=5")]),
          grpc.status.INVALID_ARGUMENT,
          /descriptor 1 has 5 entries, over the maximum of 4/,
        ),
      );
    });

    it("an over-long entry key, an empty one, an over-long value", async () => {
      await changesNothing(["api/fw=e1"], async () => {
        await expectStatus(
          envoy([desc("fw=e1"), desc(`${"k".repeat(65)}=v`)]),
          grpc.status.INVALID_ARGUMENT,
          /descriptor 1: entry key is 65 long, over the maximum of 64/,
        );
        await expectStatus(
          envoy([desc("fw=e1"), desc("=v")]),
          grpc.status.INVALID_ARGUMENT,
          /descriptor 1: entry key is empty/,
        );
        await expectStatus(
          envoy([desc(`fw=${"v".repeat(65)}`)]),
          grpc.status.INVALID_ARGUMENT,
          /descriptor 0: entry value is too long/,
        );
      });
    });

    it("too many descriptors; an absurd hits_addend", async () => {
      await changesNothing(["api/fw=e1"], async () => {
        await expectStatus(
          envoy(Array.from({ length: 6 }, () => desc("fw=e1"))),
          grpc.status.INVALID_ARGUMENT,
          /6 descriptors, over the maximum of 5/,
        );
        await expectStatus(
          envoy([desc("fw=e1")], 5000),
          grpc.status.INVALID_ARGUMENT,
          /hits_addend 5000 exceeds the maximum of 1000/,
        );
        await expectStatus(
          envoy([desc("fw=e1"), { ...desc("fw=e1"), hitsAddend: { value: 1e15 } }]),
          grpc.status.INVALID_ARGUMENT,
          /descriptor 1 hits_addend/,
        );
      });
    });
  });

  describe("malformed messages never take the server down", () => {
    it("a message larger than maxMessageBytes is RESOURCE_EXHAUSTED, and the server answers afterwards", async () => {
      await changesNothing(["api/fw=big"], () =>
        expectStatus(
          t.rpc.check({ items: [{ key: `api/fw=${"x".repeat(LIMITS.maxMessageBytes)}`, cost: 1 }] }),
          grpc.status.RESOURCE_EXHAUSTED,
          /larger than max/i,
        ),
      );
      const ok = await t.rpc.check({ items: [{ key: "api/fw=big", cost: 1 }] });
      expect(ok.results[0]).toMatchObject({ allowed: true, remaining: 9 });
    });

    describe("garbage bytes as a request body", () => {
      type RawCall = (
        req: Buffer,
        md: grpc.Metadata,
        opts: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res?: Buffer) => void,
      ) => void;
      let client: grpc.Client & Record<"Check" | "ShouldRateLimit", RawCall>;

      beforeAll(() => {
        const Raw = grpc.makeGenericClientConstructor(
          {
            Check: rawMethod("/shardlimit.v1.RateLimiter/Check"),
            ShouldRateLimit: rawMethod("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"),
          },
          "Raw",
        );
        client = new Raw(
          `127.0.0.1:${t.server.grpcPort}`,
          grpc.credentials.createInsecure(),
        ) as unknown as typeof client;
      });
      afterAll(() => client.close());

      const send = (method: "Check" | "ShouldRateLimit", body: Buffer) =>
        new Promise<{ err: grpc.ServiceError | null; res?: Buffer }>((resolve) => {
          client[method](body, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res) =>
            resolve({ err, res }),
          );
        });

      it("bytes that cannot decode: INVALID_ARGUMENT naming the message, nothing counted", async () => {
        const bodies = [
          // items (field 1, length-delimited) claiming 4 GB
          Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
          // a tag with no length after it
          Buffer.from([0x0a]),
          // wire type 7 does not exist
          Buffer.from([0x0f, 0x01]),
          // a truncated varint
          Buffer.from([0x18, 0xff, 0xff]),
        ];
        for (const body of bodies) {
          for (const method of ["Check", "ShouldRateLimit"] as const) {
            await changesNothing(["api/fw=good"], async () => {
              const { err } = await send(method, body);
              expect(err, `${method} ${body.toString("hex")}`).not.toBeNull();
              expect(grpc.status[err!.code]).toBe("INVALID_ARGUMENT");
              expect(err!.details).toMatch(
                /^malformed (shardlimit\.v1\.CheckRequest|envoy\..*RateLimitRequest)/,
              );
            });
          }
        }
      });

      it("random bytes: an answer or an error status, never a crash or an internal error", async () => {
        const rand = prng(0x5eed);
        const codes = new Set<string>();
        for (let i = 0; i < 200; i++) {
          const body = Buffer.alloc(1 + Math.floor(rand() * 64));
          for (let j = 0; j < body.length; j++) body[j] = Math.floor(rand() * 256);
          const { err } = await send(i % 2 === 0 ? "Check" : "ShouldRateLimit", body);
          codes.add(err ? grpc.status[err.code]! : "OK");
          if (err) {
            expect(err.code, `${body.toString("hex")}: ${err.details}`).not.toBe(grpc.status.INTERNAL);
            expect(err.code).not.toBe(grpc.status.UNAVAILABLE);
          }
        }
        expect(codes.has("INVALID_ARGUMENT")).toBe(true);

        // Well-formed messages with random contents: keys built from the characters that matter
        // to parsing (separators, escapes, wildcards, a lone surrogate), and any double as a cost.
        const parts = ["api", "fw", "tb", "conc", "/", "=", "%", "%2F", "*", "é", "\ud800", " ", ""];
        const amounts = [0, 1, -0, -1, 0.5, 1e300, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 1000];
        const pickOf = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!;
        const str = () => Array.from({ length: Math.floor(rand() * 6) }, () => pickOf(parts)).join("");
        for (let i = 0; i < 200; i++) {
          const n = 1 + Math.floor(rand() * LIMITS.maxBatch);
          const call =
            i % 2 === 0
              ? t.rpc.check({
                  items: Array.from({ length: n }, () => ({ key: str(), cost: pickOf(amounts) })),
                  atomic: rand() < 0.5,
                })
              : t.rpc.shouldRateLimit({
                  domain: pickOf(["api", str()]),
                  hitsAddend: Math.floor(rand() * 3),
                  descriptors: Array.from({ length: n }, () => ({
                    entries: Array.from({ length: Math.floor(rand() * 3) }, () => ({
                      key: str(),
                      value: str(),
                    })),
                  })),
                });
          const err = await call.then(
            () => null,
            (e: grpc.ServiceError) => e,
          );
          if (err) expect([grpc.status.INVALID_ARGUMENT], `${err.code}: ${err.details}`).toContain(err.code);
        }
        // Still serving.
        const ok = await t.rpc.check({ items: [{ key: "api/fw=after-garbage", cost: 1 }] });
        expect(ok.results[0]).toMatchObject({ allowed: true, remaining: 9 });
      });
    });
  });
});

describe("the counter table's bound", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  useTestServer(CONFIG, { clock, maxCounters: 2 }, (s) => {
    t = s;
  });

  it("new keys past maxCounters get COUNTERS_EXHAUSTED; known keys keep working", async () => {
    await t.rpc.check({ items: [{ key: "api/fw=a", cost: 1 }] });
    await t.rpc.check({ items: [{ key: "api/fw=b", cost: 1 }] });
    const c = await t.rpc.check({ items: [{ key: "api/fw=c", cost: 1 }] });
    expect(c.results[0]!.error?.code).toBe(ErrorCode.COUNTERS_EXHAUSTED);
    const r = await t.rpc.reportAndGetPolicy({
      clientId: "gw",
      seq: 1,
      entries: [
        { key: "api/fw=c", admitted: 1 },
        { key: "api/fw=a", admitted: 1 },
      ] as ReportEntryMsg[],
    });
    expect(r.policies[0]!.error?.code).toBe(ErrorCode.COUNTERS_EXHAUSTED);
    expect(r.policies[1]!.error ?? null).toBeNull();
    const a = await t.rpc.acquire({ key: "api/conc=x", leaseId: "l" });
    expect(a.error?.code).toBe(ErrorCode.COUNTERS_EXHAUSTED);
    const e = await callError(t.rpc.shouldRateLimit({ domain: "api", descriptors: [desc("fw=d")] }));
    expect(e.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(t.server.engine.size).toBe(2);
    const known = await t.rpc.check({ items: [{ key: "api/fw=a", cost: 1 }] });
    expect(known.results[0]).toMatchObject({ allowed: true, remaining: 7 });
  });
});
