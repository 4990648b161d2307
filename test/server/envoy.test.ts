import { status as GrpcStatus } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import type { EnvoyDescriptor, EnvoyDescriptorStatus, EnvoyRequest } from "../../src/protocol/messages.js";
import { callError, desc, peek, T0, type TestServer, useTestServer } from "./harness.js";

/**
 * `ShouldRateLimit` over a real gRPC connection, case by case after envoyproxy/ratelimit's own
 * service and integration tests (test/service/ratelimit_test.go, test/integration): what Envoy
 * sees for unknown domains, unmatched descriptors, fixed windows counting down, several
 * descriptors, hits_addend, unlimited, shadow_mode, replaces, overrides and bad requests.
 */

const OK = 1;
const OVER_LIMIT = 2;
const SECOND = 1;
const MINUTE = 2;
const HOUR = 3;
const MAX_U32 = 4294967295;

const CONFIG = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: remote_address
    value: 10.0.0.10
    rate_limit: { unlimited: true }
  - key: remote_address
    value: 203.0.113.7
    shadow_mode: true
    rate_limit: { unit: minute, requests_per_unit: 2 }
  - key: api_key
    rate_limit: { name: api_key_hourly, unit: hour, requests_per_unit: 3 }
  - key: tenant
    rate_limit:
      name: tenant_rps
      unit: second
      requests_per_unit: 3
  - key: tenant_override
    value: vip
    rate_limit:
      unit: second
      requests_per_unit: 100
      replaces:
        - name: tenant_rps
  - key: path
    value: /api
    rate_limit: { unit: second, requests_per_unit: 50 }
    descriptors:
      - key: method
        value: GET
        rate_limit: { unit: second, requests_per_unit: 10 }
      - key: method
        rate_limit: { unit: second, requests_per_unit: 2 }
  - key: user
    value: bot*
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: user
    rate_limit: { unit: minute, requests_per_unit: 4 }
  - key: bucket
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 2 }
  - key: in_flight
    rate_limit: { algorithm: concurrency, requests_per_unit: 3 }
`;

describe("ShouldRateLimit over gRPC", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);

  useTestServer(CONFIG, { clock }, (s) => {
    t = s;
  });

  function call(domain: string, descriptors: EnvoyDescriptor[], hitsAddend = 0) {
    return t.rpc.shouldRateLimit({ domain, descriptors, hitsAddend } satisfies EnvoyRequest);
  }

  /** One descriptor status as plain fields (absent messages read as null on decoded protobufs). */
  function plain(s: EnvoyDescriptorStatus | undefined) {
    if (!s) throw new Error("missing descriptor status");
    return {
      code: s.code,
      limit: s.currentLimit
        ? {
            name: s.currentLimit.name,
            requestsPerUnit: s.currentLimit.requestsPerUnit,
            unit: s.currentLimit.unit,
          }
        : null,
      remaining: s.limitRemaining ?? 0,
      reset: s.durationUntilReset ? Number(s.durationUntilReset.seconds) : null,
    };
  }

  it("unknown domain: OK, no current_limit, limit_remaining 0", async () => {
    clock.set(T0);
    const res = await call("nowhere", [desc("remote_address=1.2.3.4"), desc("hello=world")]);
    expect(res.overallCode).toBe(OK);
    expect(res.statuses.map(plain)).toEqual([
      { code: OK, limit: null, remaining: 0, reset: null },
      { code: OK, limit: null, remaining: 0, reset: null },
    ]);
  });

  it("unmatched descriptors in a known domain: OK with no current_limit", async () => {
    clock.set(T0);
    const res = await call("edge", [
      desc("hello=world"),
      // Deeper than the tree: the node reached by the last entry decides, and there is none.
      desc("remote_address=1.2.3.4", "extra=x"),
      // path has only /api and no key-only node.
      desc("path=/other"),
    ]);
    expect(res.overallCode).toBe(OK);
    for (const s of res.statuses)
      expect(plain(s)).toEqual({ code: OK, limit: null, remaining: 0, reset: null });
  });

  it("fixed window counts down, then is over limit, with duration_until_reset to the epoch-aligned window end", async () => {
    // 20.5 s into a minute and into an hour: Envoy says 60 - 20 = 40 s, 3600 - 20 = 3580 s.
    clock.set(T0 + 20_500);
    for (let i = 0; i < 7; i++) {
      const res = await call("edge", [desc("remote_address=1.1.1.1")]);
      const over = i >= 5;
      expect(res.overallCode).toBe(over ? OVER_LIMIT : OK);
      expect(plain(res.statuses[0])).toEqual({
        code: over ? OVER_LIMIT : OK,
        limit: { name: "", requestsPerUnit: 5, unit: MINUTE },
        remaining: over ? 0 : 5 - (i + 1),
        reset: 40,
      });
    }
    const hourly = await call("edge", [desc("api_key=k0")]);
    expect(plain(hourly.statuses[0])).toEqual({
      code: OK,
      limit: { name: "api_key_hourly", requestsPerUnit: 3, unit: HOUR },
      remaining: 2,
      reset: 3580,
    });

    // Later in the same window: still over, and the reset counts down in whole seconds.
    clock.set(T0 + 58_001);
    const late = await call("edge", [desc("remote_address=1.1.1.1")]);
    expect(plain(late.statuses[0])).toMatchObject({ code: OVER_LIMIT, remaining: 0, reset: 2 });

    // The next minute is a new window.
    clock.set(T0 + 60_000);
    const next = await call("edge", [desc("remote_address=1.1.1.1")]);
    expect(next.overallCode).toBe(OK);
    expect(plain(next.statuses[0])).toMatchObject({ code: OK, remaining: 4, reset: 60 });
  });

  it("is OVER_LIMIT when any descriptor is over, with a status per descriptor; every descriptor is counted", async () => {
    clock.set(T0);
    for (let i = 0; i < 5; i++) {
      const res = await call("edge", [desc("remote_address=2.2.2.2"), desc("api_key=k1")]);
      const secondOver = i >= 3;
      expect(res.overallCode).toBe(secondOver ? OVER_LIMIT : OK);
      expect(plain(res.statuses[0])).toMatchObject({ code: OK, remaining: 5 - (i + 1) });
      expect(plain(res.statuses[1])).toMatchObject({
        code: secondOver ? OVER_LIMIT : OK,
        remaining: secondOver ? 0 : 3 - (i + 1),
        limit: { requestsPerUnit: 3, unit: HOUR },
      });
    }
    // Envoy counts a request against every descriptor, even when another one rejected it.
    const res = await call("edge", [desc("remote_address=2.2.2.2")]);
    expect(plain(res.statuses[0])).toMatchObject({ code: OVER_LIMIT, remaining: 0 });
  });

  it("the same counter twice in one request is charged twice", async () => {
    clock.set(T0);
    const res = await call("edge", [desc("remote_address=6.6.6.6"), desc("remote_address=6.6.6.6")]);
    expect(res.statuses.map((s) => plain(s).remaining)).toEqual([4, 3]);
  });

  it("hits_addend on the request, overridden per descriptor (UInt64Value, 0 = look without charging)", async () => {
    clock.set(T0);
    const res = await t.rpc.shouldRateLimit({
      domain: "edge",
      hitsAddend: 2,
      descriptors: [
        desc("remote_address=3.3.3.3"),
        { ...desc("remote_address=3.3.3.4"), hitsAddend: { value: 4 } },
        { ...desc("remote_address=3.3.3.5"), hitsAddend: { value: 0 } },
      ],
    });
    expect(res.overallCode).toBe(OK);
    expect(res.statuses.map((s) => plain(s).remaining)).toEqual([3, 1, 5]);
    expect(peek(t, "edge/remote_address=3.3.3.5", clock.now())?.remaining).toBe(5);
    // hits_addend 0 on the request means 1.
    const one = await call("edge", [desc("remote_address=3.3.3.3")], 0);
    expect(plain(one.statuses[0]).remaining).toBe(2);
  });

  it("hits_addend larger than the remaining: over limit, and (fixed window, as Envoy) the hits still count", async () => {
    clock.set(T0);
    const first = await call("edge", [desc("remote_address=4.4.4.4")], 3);
    expect(plain(first.statuses[0])).toMatchObject({ code: OK, remaining: 2 });
    const second = await call("edge", [desc("remote_address=4.4.4.4")], 3);
    expect(second.overallCode).toBe(OVER_LIMIT);
    expect(plain(second.statuses[0])).toMatchObject({ code: OVER_LIMIT, remaining: 0 });
    const third = await call("edge", [desc("remote_address=4.4.4.4")], 1);
    expect(third.overallCode).toBe(OVER_LIMIT);
    // More than the whole limit at once on a fresh key.
    const huge = await call("edge", [desc("remote_address=4.4.4.5")], 6);
    expect(plain(huge.statuses[0])).toMatchObject({ code: OVER_LIMIT, remaining: 0 });
  });

  it("unlimited: OK with limit_remaining 2^32-1 and no current_limit, however often", async () => {
    clock.set(T0);
    for (let i = 0; i < 10; i++) {
      const res = await call("edge", [desc("remote_address=10.0.0.10")], 1000);
      expect(res.overallCode).toBe(OK);
      expect(plain(res.statuses[0])).toEqual({ code: OK, limit: null, remaining: MAX_U32, reset: null });
    }
  });

  it("shadow_mode: OK even when over the limit, while still counting", async () => {
    clock.set(T0);
    for (let i = 0; i < 4; i++) {
      const res = await call("edge", [desc("remote_address=203.0.113.7")]);
      expect(res.overallCode).toBe(OK);
      expect(plain(res.statuses[0])).toMatchObject({
        code: OK,
        limit: { requestsPerUnit: 2, unit: MINUTE },
        remaining: Math.max(0, 2 - (i + 1)),
      });
    }
    // A shadowed descriptor never hides another descriptor being over.
    const mixed = await call("edge", [desc("remote_address=203.0.113.7"), desc("api_key=k2")], 4);
    expect(mixed.overallCode).toBe(OVER_LIMIT);
    expect(mixed.statuses.map((s) => s.code)).toEqual([OK, OVER_LIMIT]);
  });

  it("replaces: a limit named in another matched rule's replaces is neither checked nor charged", async () => {
    clock.set(T0);
    for (let i = 0; i < 5; i++) {
      const res = await call("edge", [desc("tenant=acme"), desc("tenant_override=vip")]);
      expect(res.overallCode).toBe(OK);
      expect(plain(res.statuses[0])).toEqual({ code: OK, limit: null, remaining: 0, reset: null });
      expect(plain(res.statuses[1])).toMatchObject({
        code: OK,
        limit: { requestsPerUnit: 100, unit: SECOND },
        remaining: 100 - (i + 1),
      });
    }
    // tenant_rps (3/s) was never charged: alone, tenant=acme still has all of it.
    const alone = await call("edge", [desc("tenant=acme")]);
    expect(plain(alone.statuses[0])).toMatchObject({
      code: OK,
      limit: { name: "tenant_rps", requestsPerUnit: 3, unit: SECOND },
      remaining: 2,
    });
  });

  it("nested descriptors: the node reached by the last entry applies, key+value before wildcard before key-only", async () => {
    clock.set(T0);
    const res = await call("edge", [
      desc("path=/api", "method=GET"),
      desc("path=/api", "method=POST"),
      desc("path=/api"),
      desc("user=bot-1"),
      desc("user=alice"),
      desc("user=bot-2"),
    ]);
    expect(res.statuses.map((s) => plain(s).limit?.requestsPerUnit)).toEqual([10, 2, 50, 1, 4, 1]);
    expect(res.statuses.map((s) => plain(s).remaining)).toEqual([9, 1, 49, 0, 3, 0]);
    // A wildcard without share_threshold counts each value apart: bot-1 is now over, bot-2 too,
    // but a third bot still has its own allowance.
    const again = await call("edge", [desc("user=bot-1"), desc("user=bot-3")]);
    expect(again.statuses.map((s) => s.code)).toEqual([OVER_LIMIT, OK]);
  });

  it("a descriptor's limit override is used instead of the config, counted apart", async () => {
    clock.set(T0);
    const withOverride = (): EnvoyDescriptor => ({
      ...desc("remote_address=5.5.5.5"),
      limit: { requestsPerUnit: 2, unit: SECOND },
    });
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await call("edge", [withOverride()]);
      codes.push(res.overallCode);
      expect(plain(res.statuses[0])).toMatchObject({
        limit: { requestsPerUnit: 2, unit: SECOND },
        remaining: Math.max(0, 2 - (i + 1)),
        reset: 1,
      });
    }
    expect(codes).toEqual([OK, OK, OVER_LIMIT]);
    // The configured 5/minute counter for the same descriptor was not touched.
    const plainReq = await call("edge", [desc("remote_address=5.5.5.5")]);
    expect(plain(plainReq.statuses[0])).toMatchObject({
      code: OK,
      limit: { requestsPerUnit: 5, unit: MINUTE },
      remaining: 4,
    });
    // As in Envoy, an override applies to a descriptor the config does not match, in a known domain.
    const unmatched = await call("edge", [
      { ...desc("hello=world"), limit: { requestsPerUnit: 1, unit: HOUR } },
    ]);
    expect(plain(unmatched.statuses[0])).toMatchObject({
      code: OK,
      limit: { requestsPerUnit: 1, unit: HOUR },
      remaining: 0,
    });
  });

  it("a limit override follows Envoy: unknown domain -> no limit; never shadowed; not inheriting name or replaces", async () => {
    clock.set(T0);
    const override = { requestsPerUnit: 1, unit: MINUTE };
    const unknown = await call("nowhere", [{ ...desc("remote_address=5.5.5.6"), limit: override }]);
    expect(plain(unknown.statuses[0])).toEqual({ code: OK, limit: null, remaining: 0, reset: null });

    // The shadow-mode descriptor, overridden, is enforced (Envoy: overrides never enable shadow_mode).
    const shadowed = () => call("edge", [{ ...desc("remote_address=203.0.113.7"), limit: override }]);
    expect((await shadowed()).overallCode).toBe(OK);
    const second = await shadowed();
    expect(second.overallCode).toBe(OVER_LIMIT);
    expect(plain(second.statuses[0])).toMatchObject({ code: OVER_LIMIT, limit: { name: "" } });

    // An overridden tenant_override replaces nothing, and an overridden tenant is not replaced.
    const res = await call("edge", [
      desc("tenant=replace-check"),
      { ...desc("tenant_override=vip"), limit: { requestsPerUnit: 50, unit: SECOND } },
    ]);
    expect(plain(res.statuses[0])).toMatchObject({ limit: { name: "tenant_rps", requestsPerUnit: 3 } });
    const res2 = await call("edge", [
      { ...desc("tenant=replace-check"), limit: { requestsPerUnit: 7, unit: SECOND } },
      desc("tenant_override=vip"),
    ]);
    expect(plain(res2.statuses[0])).toMatchObject({ limit: { name: "", requestsPerUnit: 7 }, remaining: 6 });
  });

  it("a limit override with an unknown unit is INVALID_ARGUMENT", async () => {
    const err = await callError(
      call("edge", [{ ...desc("remote_address=5.5.5.7"), limit: { requestsPerUnit: 1, unit: 99 } }]),
    );
    expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(err.details).toMatch(/unit/);
  });

  it("a descriptor whose counter key would pass the key bound is INVALID_ARGUMENT, and makes no counter", async () => {
    const long = "v".repeat(1020); // each entry within the bound; the counter key is not
    const before = t.server.engine.size;
    const cases: EnvoyDescriptor[] = [
      {
        entries: [
          { key: "path", value: "/api" },
          { key: "method", value: long },
        ],
      },
      { entries: [{ key: "user", value: long }], limit: { requestsPerUnit: 1, unit: MINUTE } },
    ];
    for (const d of cases) {
      const err = await callError(call("edge", [d]));
      expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
      expect(err.details).toMatch(/^descriptor 0: its counter key is \d+ long, over the maximum of 1024$/);
    }
    expect(t.server.engine.size).toBe(before);
  });

  it("an empty domain is INVALID_ARGUMENT", async () => {
    const err = await callError(call("", [desc("remote_address=1.2.3.4")]));
    expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(err.details).toBe("rate limit domain must not be empty");
  });

  it("an empty descriptor list is INVALID_ARGUMENT", async () => {
    const err = await callError(call("edge", []));
    expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(err.details).toBe("rate limit descriptor list must not be empty");
  });

  it("a token_bucket rule is strict: a rejected hit takes nothing, tokens refill over time", async () => {
    clock.set(T0);
    const hit = async (n = 1) => (await call("edge", [desc("bucket=b1")], n)).statuses[0]!;
    expect(plain(await hit())).toMatchObject({
      code: OK,
      remaining: 1,
      limit: { requestsPerUnit: 2, unit: SECOND },
    });
    expect(plain(await hit())).toMatchObject({ code: OK, remaining: 0 });
    expect(plain(await hit())).toMatchObject({ code: OVER_LIMIT, remaining: 0 });
    expect(plain(await hit())).toMatchObject({ code: OVER_LIMIT, remaining: 0 });
    // Half a second refills one token; the rejected hits ran up no debt.
    clock.advance(500);
    expect(plain(await hit())).toMatchObject({ code: OK, remaining: 0 });
    expect(plain(await hit())).toMatchObject({ code: OVER_LIMIT });
    // More than the bucket holds is rejected without taking anything.
    const big = (await call("edge", [desc("bucket=b2")], 3)).statuses[0]!;
    expect(plain(big)).toMatchObject({ code: OVER_LIMIT, remaining: 2 });
    expect(plain(await call("edge", [desc("bucket=b2")], 2).then((r) => r.statuses[0]))).toMatchObject({
      code: OK,
      remaining: 0,
    });
  });

  it("a concurrency rule is INVALID_ARGUMENT naming the rule, and nothing is charged", async () => {
    clock.set(T0);
    const err = await callError(call("edge", [desc("remote_address=7.7.7.7"), desc("in_flight=x")]));
    expect(err.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(err.details).toMatch(/descriptor 1/);
    expect(err.details).toMatch(/in_flight/);
    expect(err.details).toMatch(/concurrency/);
    expect(peek(t, "edge/remote_address=7.7.7.7", clock.now())?.remaining).toBe(5);
  });
});
