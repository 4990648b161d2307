import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type MemberRecord, Membership } from "../../src/cluster/membership.js";
import { systemClock } from "../../src/core/clock.js";
import { waitFor as waitUntil } from "../../src/testkit/wait.js";
import { etcdPerSuite } from "./etcd-harness.js";

const log = pino({ level: "silent" });

/** Waits until `fn` gives a value, and returns it. */
async function waitFor<T>(what: string, fn: () => T | undefined, ms = 15_000): Promise<T> {
  let v: T | undefined;
  await waitUntil(
    what,
    () => {
      v = fn();
      return v !== undefined;
    },
    ms,
    25,
  );
  return v!;
}

describe("membership on a real etcd", () => {
  const suite = etcdPerSuite();

  function member(id: string, prefix: string, ttlSeconds = 2) {
    const client = suite.client();
    let seen: MemberRecord[] = [];
    const m = new Membership({
      client,
      prefix,
      self: { id, address: `127.0.0.1:${9000 + id.length}`, capacity: 1, startedAt: Date.now() },
      ttlSeconds,
      clock: systemClock,
      log,
      onMembers: (ms) => {
        seen = ms;
      },
    });
    return { m, client, ids: () => seen.map((x) => x.id) };
  }

  it("members see each other; a planned leave disappears at once", async () => {
    const a = member("a", "/t1/");
    const b = member("b", "/t1/");
    await a.m.start();
    await b.m.start();
    await waitFor("both members", () => (a.ids().join() === "a,b" ? true : undefined));
    expect(b.ids()).toEqual(["a", "b"]);
    expect(a.m.registrationFresh()).toBe(true);
    const t0 = Date.now();
    await b.m.stop();
    await waitFor("b gone", () => (a.ids().join() === "a" ? true : undefined), 1000);
    expect(Date.now() - t0).toBeLessThan(1000);
    await a.m.stop();
  });

  it("a crashed member (no keepalives, no revoke) disappears once its lease TTL runs out", async () => {
    const a = member("a", "/t2/");
    const b = member("b", "/t2/", 2);
    await a.m.start();
    await b.m.start();
    await waitFor("both members", () => (a.ids().join() === "a,b" ? true : undefined));
    const t0 = Date.now();
    b.m.currentLease()!.release(); // as a killed process: keepalives stop, nothing is revoked
    await waitFor("b expired", () => (a.ids().join() === "a" ? true : undefined), 10_000);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThan(500);
    expect(took).toBeLessThan(6000);
    await a.m.stop();
  });

  it("keeps the last view while etcd is down and catches up when it returns", async () => {
    const a = member("a", "/t3/");
    await a.m.start();
    await waitFor("self", () => (a.ids().join() === "a" ? true : undefined));
    await suite.etcd().stop();
    await new Promise((r) => setTimeout(r, 300));
    expect(a.ids()).toEqual(["a"]); // static stability: nothing forgotten while etcd is away
    await suite.etcd().start();
    const b = member("b", "/t3/");
    await b.m.start();
    await waitFor("b seen after etcd returned", () => (a.ids().join() === "a,b" ? true : undefined), 20_000);
    await b.m.stop();
    await a.m.stop();
  });
});
