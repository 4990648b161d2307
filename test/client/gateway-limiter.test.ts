import { describe, expect, it } from "vitest";
import type { GatewayLimiterOptions } from "../../src/client/gateway-limiter.js";
import {
  InvalidArgumentError,
  NotOwnerError,
  NotReadyError,
  ShardlimitError,
} from "../../src/core/errors.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import {
  A,
  B,
  config,
  entryKey,
  type FakeTransport,
  startGateway,
  twoOwners,
  YAML,
} from "../../src/testkit/fake-transport.js";

const _START = 600_000;

function setup(
  opts: Partial<GatewayLimiterOptions> = {},
  addresses = [A],
  modes: Record<string, "fail"> = {},
) {
  return startGateway({ opts, addresses, modes });
}

function sumOf(t: FakeTransport, key: string | undefined, field: "admitted" | "offered"): number {
  let sum = 0;
  for (const r of t.reports) {
    for (const e of r.req.entries) {
      if (key !== undefined && entryKey(t, r.address, e) !== key) continue;
      sum += field === "admitted" ? e.admitted : e.admitted + e.rejected;
    }
  }
  return sum;
}
const sumAdmitted = (t: FakeTransport, key?: string) => sumOf(t, key, "admitted");

describe("GatewayLimiter: start-up", () => {
  it("answers beforeReady until a server has handed out the limits and the assignment", () => {
    const open = setup({}, [A], { [A]: "fail" });
    open.run(50);
    expect(open.limiter.ready).toBe(false);
    expect(open.limiter.decide("api/tenant=x")).toBe(true);
    const closed = setup({ beforeReady: "closed" }, [A], { [A]: "fail" });
    closed.run(50);
    expect(closed.limiter.decide("api/tenant=x")).toBe(false);
    closed.t.modes.set(A, "ok");
    closed.run(1000); // it keeps asking for the limits
    expect(closed.limiter.ready).toBe(true);
  });

  it("whenReady rejects with NotReadyError naming the servers when none answers", async () => {
    const { limiter, run } = setup({}, [A], { [A]: "fail" });
    const p = limiter.whenReady(200);
    run(300);
    await expect(p).rejects.toBeInstanceOf(NotReadyError);
    await expect(p).rejects.toThrow(/a:1/);
  });

  it("whenReady on a closed limiter rejects at once, and close settles a wait in progress", async () => {
    const { limiter } = setup({}, [A], { [A]: "fail" });
    const waiting = limiter.whenReady(60_000);
    limiter.close();
    await expect(waiting).rejects.toThrow(/closed/);
    await expect(limiter.whenReady(60_000)).rejects.toThrow(/closed/);
  });
});

describe("GatewayLimiter: deciding and reporting", () => {
  it("reports one batch per interval with the counts, and applies the policy that comes back", () => {
    const { t, limiter, run } = setup();
    run(10);
    expect(limiter.ready).toBe(true);
    for (let i = 0; i < 5; i++) limiter.decide("api/tenant=x");
    limiter.decide("api/tenant=y", 3);
    run(100);
    // The first use of a key without a policy is reported at once; the rest at the interval.
    // The first use of each key rides on its allowance (1); the rest waited for the policy.
    expect(sumOf(t, "api/tenant=x", "offered")).toBe(5);
    expect(sumOf(t, "api/tenant=y", "offered")).toBe(3);
    for (let i = 0; i < 5; i++) expect(limiter.decide("api/tenant=x")).toBe(true);
    run(100);
    expect(sumAdmitted(t, "api/tenant=x")).toBe(6);
    const before = t.reports.length;
    run(100);
    expect(t.reports.length).toBe(before); // nothing new to report: no report
    expect(limiter.describe("api/tenant=x")?.remaining).toBeGreaterThan(0);
  });

  it("never reports keys no limit applies to", () => {
    const { t, limiter, run } = setup();
    run(10);
    for (let i = 0; i < 1000; i++) expect(limiter.decide("api/free=1")).toBe(true);
    expect(limiter.decide("api/nolimit=1")).toBe(true);
    run(300);
    expect(t.reports.flatMap((r) => r.req.entries)).toEqual([]);
  });

  it("holds one gateway to the limit (100/s token bucket, 300/s offered for 3 s)", () => {
    const { limiter, run } = setup();
    run(10);
    let admitted = 0;
    for (let ms = 0; ms < 3000; ms++) {
      for (let i = 0; i < (ms % 10 === 0 ? 3 : 0); i++) if (limiter.decide("api/tenant=x")) admitted++;
      run(1);
    }
    // 100 in the full bucket at the start, then 100/s.
    expect(admitted).toBeGreaterThan(370);
    expect(admitted).toBeLessThan(420);
  });

  it("a strict key (local_allowance 0) admits nothing before its first policy, then what it grants", () => {
    const { limiter, run } = setup();
    run(10);
    expect(limiter.decide("api/strict=1")).toBe(false);
    run(5); // reported at once (no policy), answered a millisecond later
    expect(limiter.decide("api/strict=1")).toBe(true);
  });

  it("routes each key to its owner: one report per owner, each with only its keys", () => {
    const { t, limiter, run } = setup({}, [A, B]);
    twoOwners(t);
    run(10);
    const keys = Array.from({ length: 40 }, (_, i) => `api/tenant=t${i}`);
    for (const k of keys) limiter.decide(k);
    run(100);
    const to = (a: string) => t.reports.filter((r) => r.address === a);
    expect(to(A).length).toBeGreaterThan(0);
    expect(to(B).length).toBeGreaterThan(0);
    const seen = new Set(t.reports.flatMap((r) => r.req.entries.map((e) => e.key)));
    expect(seen.size).toBe(40);
    for (const r of t.reports) expect(r.req.generation).toBe(1);
  });

  it("check() asks the key's owner synchronously and exactly", async () => {
    const { t, limiter, run } = setup({}, [A, B]);
    twoOwners(t);
    run(10);
    const keys = Array.from({ length: 10 }, (_, i) => `api/minute=c${i}`);
    const answers = keys.map((k) => limiter.check(k, 600));
    run(5);
    expect(await Promise.all(answers)).toEqual(keys.map(() => true));
    expect(new Set(t.checks)).toEqual(new Set([A, B]));
    const again = limiter.check(keys[0]!, 1);
    run(5);
    expect(await again).toBe(false); // the owner counted the 600
    const free = limiter.check("api/free=1");
    expect(await free).toBe(true);
  });

  it("check() rejects with the typed error of the owner's per-item code", async () => {
    const { t, limiter, run } = setup({}, [A]);
    run(10);
    // A real refusal: Check on a concurrency key is the wrong algorithm.
    const wrong = limiter.check("api/conc=x");
    run(5);
    await expect(wrong).rejects.toMatchObject({ code: "WRONG_ALGORITHM" });
    const server = t.servers.get(A)!;
    server.check = () => ({
      generation: 4,
      results: [{ error: { code: ErrorCode.NOT_OWNER, message: "moved" } }],
    });
    const moved = limiter.check("api/minute=m");
    run(5);
    await expect(moved).rejects.toBeInstanceOf(NotOwnerError);
    await expect(moved).rejects.toMatchObject({ code: "NOT_OWNER", generation: 4, message: "moved" });
    server.check = () => ({
      generation: 0,
      results: [{ error: { code: ErrorCode.INVALID_KEY, message: "bad" } }],
    });
    const bad = limiter.check("api/minute=m");
    run(5);
    await expect(bad).rejects.toBeInstanceOf(ShardlimitError);
    await expect(bad).rejects.toMatchObject({ code: "INVALID_KEY", message: "bad" });
  });

  it("a slow owner gets one report in flight and then the merged counts, not a queue", () => {
    const { t, limiter, run } = setup({ reportTimeoutMs: 10_000 });
    run(10);
    limiter.decide("api/tenant=x");
    run(200);
    t.reports.length = 0;
    t.modes.set(A, "hang");
    for (let i = 0; i < 10; i++) {
      limiter.decide("api/tenant=x");
      run(100);
    }
    expect(t.reports.length).toBe(1);
    t.modes.set(A, "ok");
    run(10_000); // the hung call times out, is re-sent unchanged, then the rest goes in one report
    const after = t.reports.slice(1);
    expect(after[0]!.req.seq).toBe(t.reports[0]!.req.seq);
    expect(sumAdmitted(t) - t.reports[0]!.req.entries[0]!.admitted).toBe(10);
    expect(after.length).toBeLessThanOrEqual(3);
  });

  it("re-sends a failed report with the same sequence number, so it is applied once", () => {
    const { t, limiter, run } = setup();
    run(10);
    limiter.decide("api/minute=m");
    run(10);
    for (let i = 0; i < 7; i++) expect(limiter.decide("api/minute=m")).toBe(true);
    // The owner applies it but the answer is lost: the client sees a failure.
    t.modes.set(A, "lose");
    run(100);
    t.modes.set(A, "ok");
    run(300);
    const seqs = t.reports.map((r) => r.req.seq);
    expect(seqs[2]).toBe(seqs[1]);
    const c = t.servers
      .get(A)!
      .check({ items: [{ key: "api/minute=m", cost: 0 }], atomic: false, generation: 0 });
    expect(c.results[0]!.remaining).toBe(600 - 8 - 1); // 8 reported once, 1 for this Check
  });
});

describe("GatewayLimiter: owners moving and failing", () => {
  it("after NOT_OWNER the counts go to the new owner, with the window-to-date total", () => {
    const { t, limiter, run } = setup({}, [A, B]);
    twoOwners(t);
    run(10);
    limiter.decide("api/minute=m", 5);
    run(100);
    const first = t.reports.at(-1)!;
    const owner = first.address;
    const other = owner === A ? B : A;
    // The key moves: its old owner now answers NOT_OWNER with a newer generation.
    t.view = {
      ...t.view,
      generation: 2,
      slices: t.view.slices.map((s) => ({ ...s, owner: 1 - s.owner })),
    };
    t.rewrite = (address, res) =>
      address === owner
        ? {
            ...res,
            generation: 2,
            policies: res.policies.map(() => ({ error: { code: ErrorCode.NOT_OWNER, message: "moved" } })),
          }
        : res;
    limiter.decide("api/minute=m", 2);
    run(300);
    const moved = t.reports.filter((r) => r.address === other).flatMap((r) => r.req.entries);
    expect(moved.reduce((s, e) => s + e.admitted, 0)).toBe(2);
    // 5 acknowledged by the old owner + the 2 now: what a new owner that started empty needs.
    expect(moved[0]!.windowAdmitted).toBe(7);
  });

  it("an owner restarted at the same address (counters lost) is rebuilt from the window total", () => {
    const { t, limiter, run } = setup();
    run(10);
    limiter.decide("api/minute=m");
    run(10);
    for (let i = 0; i < 20; i++) limiter.decide("api/minute=m");
    run(200);
    // SIGKILL and restart before the lease ran out: same address, same assignment, empty engine.
    t.servers.set(A, t.limiter());
    limiter.decide("api/minute=m");
    run(300);
    const c = t.servers
      .get(A)!
      .check({ items: [{ key: "api/minute=m", cost: 1 }], atomic: false, generation: 0 });
    expect(c.results[0]!.remaining).toBe(600 - 22 - 1);
  });

  it("falls back to limit / gateways when the owner is unreachable; fail_mode closed rejects", () => {
    const { t, limiter, run } = setup();
    run(10);
    limiter.decide("api/tenant=x");
    limiter.decide("api/closed=x");
    run(100);
    t.modes.set(A, "fail");
    limiter.decide("api/tenant=x");
    limiter.decide("api/closed=x");
    run(100);
    expect(limiter.stats().fallbackKeys).toBe(2);
    expect(limiter.fallbackKeys().sort()).toEqual(["api/closed=x", "api/tenant=x"]);
    expect(limiter.decide("api/closed=x")).toBe(false);
    // One gateway: its share is the whole limit, 100/s.
    let admitted = 0;
    for (let ms = 0; ms < 2000; ms++) {
      if (limiter.decide("api/tenant=x")) admitted++;
      run(1);
    }
    expect(admitted).toBeGreaterThan(150);
    expect(admitted).toBeLessThanOrEqual(300); // at most the 100 left in the bucket + 100/s
    t.modes.set(A, "ok");
    run(300);
    limiter.decide("api/tenant=x");
    run(300);
    expect(limiter.stats().fallbackKeys).toBe(0);
  });

  it("refreshes the assignment when an answer carries a newer generation", () => {
    const { t, limiter, run } = setup({}, [A, B]);
    twoOwners(t, 1);
    run(10);
    expect(limiter.stats().generation).toBe(1);
    twoOwners(t, 5);
    t.rewrite = (_a, res) => ({ ...res, generation: 5 });
    limiter.decide("api/tenant=x");
    run(200);
    expect(limiter.stats().generation).toBe(5);
  });

  it("fetches the limits again when the servers' config version changes", () => {
    const { t, limiter, run } = setup();
    run(10);
    expect(limiter.decide("api/newkey=1")).toBe(true); // no limit yet
    const next = config(`${YAML}  - key: newkey\n    rate_limit: { unit: second, requests_per_unit: 0 }\n`);
    t.config = next;
    t.servers.get(A)!.setConfig(next);
    limiter.decide("api/tenant=x");
    run(200);
    expect(limiter.stats().configVersion).toBe(next.version);
    expect(limiter.decide("api/newkey=1")).toBe(false);
  });
});

describe("GatewayLimiter: costs, concurrency, input, memory", () => {
  it("settle charges the difference between the real cost and the estimate", () => {
    const { t, limiter, run } = setup();
    run(10);
    const ticket = limiter.reserve("api/minute=m", 10);
    expect(ticket).not.toBeNull();
    limiter.settle(ticket!, 25);
    run(5); // its policy arrives
    const small = limiter.reserve("api/minute=m", 10)!;
    limiter.settle(small, 4);
    run(100);
    // The over-estimate is charged as admitted units, the under-estimate given back apart.
    const refunded = t.reports.flatMap((r) => r.req.entries).reduce((s, e) => s + (e.refunded ?? 0), 0);
    expect(sumAdmitted(t, "api/minute=m") - refunded).toBe(25 + 4);
    expect(refunded).toBe(6);
  });

  it("acquire and release hold slots of a concurrency limit within the owner's grant", () => {
    const { limiter, run } = setup();
    run(10);
    expect(limiter.acquire("api/conc=c")).toBe(true); // allowance
    run(10); // reported at once; the owner grants up to 4 held
    let held = 1;
    while (limiter.acquire("api/conc=c")) held++;
    expect(held).toBe(4);
    limiter.release("api/conc=c");
    expect(limiter.acquire("api/conc=c")).toBe(true);
    expect(() => limiter.decide("api/conc=c")).toThrow(InvalidArgumentError);
  });

  it("rejects malformed keys and costs with a clear error, and accepts descriptors", () => {
    const { limiter, run } = setup();
    run(10);
    expect(() => limiter.decide("no-entries")).toThrow(/no descriptor entries/);
    expect(() => limiter.decide("api/tenant=x", -1)).toThrow(/cost must be a finite number >= 0, got -1/);
    expect(() => limiter.decide("api/tenant=x", Number.NaN)).toThrow(InvalidArgumentError);
    expect(() => limiter.decide("api/tenant=x", Number.POSITIVE_INFINITY)).toThrow(InvalidArgumentError);
    expect(limiter.decide({ domain: "api", entries: [{ key: "tenant", value: "x" }] })).toBe(true);
    expect(limiter.describe({ domain: "api", entries: [{ key: "tenant", value: "x" }] })?.rule.limit).toBe(
      100,
    );
  });

  it("keeps memory bounded: idle keys beyond maxKeys are forgotten once reported", () => {
    const { limiter, run } = setup({ maxKeys: 100 });
    run(10);
    for (let i = 0; i < 5000; i++) limiter.decide(`api/tenant=t${i}`);
    run(3000);
    expect(limiter.stats().keys).toBeLessThanOrEqual(100);
  });
});
