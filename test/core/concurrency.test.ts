import { describe, expect, it } from "vitest";
import { Engine, limitDefaults, ManualClock } from "../../src/core/index.js";

const T0 = 1_700_000_000_000;
const cc = (limit: number, leaseTimeoutMs = 5000) =>
  limitDefaults({ algorithm: "concurrency", limit, leaseTimeoutMs });

describe("concurrency", () => {
  it("acquires up to the limit and frees on release", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = cc(2);
    expect(e.acquire("k", l, "a", 1, clock.now())).toMatchObject({ allowed: true, remaining: 1 });
    expect(e.acquire("k", l, "b", 1, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
    expect(e.acquire("k", l, "c", 1, clock.now())).toMatchObject({ allowed: false, remaining: 0 });
    expect(e.release("k", "a", clock.now())).toBe(true);
    expect(e.release("k", "a", clock.now())).toBe(false);
    expect(e.acquire("k", l, "c", 1, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
  });

  it("a lease not released within its timeout is freed, so a crashed caller cannot hold a slot", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = cc(1, 5000);
    e.acquire("k", l, "crashed", 1, clock.now());
    clock.advance(4999);
    expect(e.acquire("k", l, "b", 1, clock.now()).allowed).toBe(false);
    clock.advance(1);
    expect(e.acquire("k", l, "b", 1, clock.now()).allowed).toBe(true);
    expect(e.release("k", "crashed", clock.now())).toBe(false);
  });

  it("renewing keeps a lease alive; a retried acquire of a held lease takes nothing more", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = cc(2, 1000);
    e.acquire("k", l, "a", 1, clock.now());
    expect(e.acquire("k", l, "a", 1, clock.now())).toMatchObject({ allowed: true, remaining: 1 });
    clock.advance(900);
    expect(e.renew("k", l, "a", clock.now())).toBe(true);
    clock.advance(900);
    expect(e.peek("k", l, clock.now()).remaining).toBe(1);
    clock.advance(200);
    expect(e.peek("k", l, clock.now()).remaining).toBe(2);
    expect(e.renew("k", l, "a", clock.now())).toBe(false);
  });

  it("weighted acquire: an amount larger than what is free is rejected and changes nothing", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = cc(10);
    e.acquire("k", l, "a", 7, clock.now());
    expect(e.acquire("k", l, "b", 4, clock.now())).toMatchObject({ allowed: false, remaining: 3 });
    expect(e.acquire("k", l, "b", 3, clock.now())).toMatchObject({ allowed: true, remaining: 0 });
  });

  it("gateway holds reported in batched mode count against synchronous acquires, and expire", () => {
    const clock = new ManualClock(T0);
    const e = new Engine();
    const l = cc(5, 2000);
    const p = e.report(
      "k",
      l,
      "gw1",
      { admitted: 3, rejected: 0, held: 3, windowAdmitted: 0 },
      true,
      100,
      clock.now(),
    );
    expect(p.remaining).toBe(2);
    expect(e.acquire("k", l, "a", 3, clock.now()).allowed).toBe(false);
    clock.advance(2001); // gw1 went silent: its holds lapse with the lease timeout
    expect(e.acquire("k", l, "a", 3, clock.now()).allowed).toBe(true);
  });

  it("holds at most maxLeasesPerKey leases on one key, however small their amounts", () => {
    const clock = new ManualClock(T0);
    const e = new Engine({ maxLeasesPerKey: 3 });
    const l = cc(10);
    for (const id of ["a", "b", "c"]) expect(e.acquire("k", l, id, 0.001, clock.now()).allowed).toBe(true);
    expect(() => e.acquire("k", l, "d", 0.001, clock.now())).toThrow(/holds its maximum of 3 leases/);
    // A held lease may still be renewed by a retried acquire, and a release makes room.
    expect(e.acquire("k", l, "a", 0.001, clock.now()).allowed).toBe(true);
    expect(e.release("k", "b", clock.now())).toBe(true);
    expect(e.acquire("k", l, "d", 0.001, clock.now()).allowed).toBe(true);
  });
});
