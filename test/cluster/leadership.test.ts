import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Leadership } from "../../src/cluster/leadership.js";
import { Membership } from "../../src/cluster/membership.js";
import { systemClock } from "../../src/core/clock.js";
import { etcdPerSuite, startProxy } from "./etcd-harness.js";

const log = pino({ level: "silent" });

async function waitFor(what: string, ok: () => boolean, ms = 15_000): Promise<number> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

describe("assigner leadership on a real etcd", () => {
  const suite = etcdPerSuite();

  async function candidate(id: string, prefix: string, ttlSeconds = 2, hosts?: string, recheckMs?: number) {
    const client = suite.client(hosts);
    const membership = new Membership({
      client,
      prefix,
      self: { id, address: `127.0.0.1:1`, capacity: 1, startedAt: 0 },
      ttlSeconds,
      clock: systemClock,
      log,
      onMembers: () => {},
    });
    await membership.start();
    const leadership = new Leadership({
      client,
      key: `${prefix}assigner/leader`,
      id,
      membership,
      clock: systemClock,
      log,
      recheckMs,
    });
    await leadership.start();
    return { client, membership, leadership };
  }

  it("exactly one of several candidates leads, and only its fenced writes land", async () => {
    const cs = await Promise.all(["a", "b", "c"].map((id) => candidate(id, "/l1/")));
    await waitFor("a leader", () => cs.some((c) => c.leadership.leading()));
    expect(cs.filter((c) => c.leadership.leading())).toHaveLength(1);
    const leader = cs.find((c) => c.leadership.leading())!;
    const other = cs.find((c) => !c.leadership.leading())!;
    expect(await leader.leadership.fencedPut("/l1/assignment", "from-leader")).toBe(true);
    expect(await other.leadership.fencedPut("/l1/assignment", "from-other")).toBe(false);
    expect(await leader.client.get("/l1/assignment").string()).toBe("from-leader");
    for (const c of cs) await c.leadership.stop();
  });

  it("a write by a deposed leader is refused by etcd itself", async () => {
    const a = await candidate("a", "/l2/");
    await waitFor("a leads", () => a.leadership.leading());
    // Someone else now holds the leader key (as after a's lease expired and b won).
    await a.client.put("/l2/assigner/leader").value("b");
    expect(await a.leadership.fencedPut("/l2/assignment", "stale")).toBe(false);
    expect(await a.client.get("/l2/assignment").string()).toBeNull();
    expect(a.leadership.leading()).toBe(false);
    await a.leadership.stop();
  });

  it("when the leader resigns another takes over at once; when it crashes, within the lease TTL", async () => {
    const a = await candidate("a", "/l3/");
    await waitFor("a leads", () => a.leadership.leading());
    const b = await candidate("b", "/l3/");
    await a.leadership.stop();
    expect(await waitFor("b leads after a resigned", () => b.leadership.leading())).toBeLessThan(1000);

    const c = await candidate("c", "/l3/", 2);
    await b.leadership.stop(); // c takes over
    await waitFor("c leads", () => c.leadership.leading());
    const d = await candidate("d", "/l3/");
    c.membership.currentLease()!.release(); // c crashes: no keepalives, nothing revoked
    // c stops acting as leader by its own clock before its lease can expire in etcd...
    const [cStopped, dLeads] = await Promise.all([
      waitFor("c steps down", () => !c.leadership.leading(), 5000),
      waitFor("d leads", () => d.leadership.leading(), 10_000),
    ]);
    expect(cStopped).toBeLessThanOrEqual(dLeads);
    expect(dLeads).toBeLessThan(6000);
    await d.leadership.stop();
  });

  it("a candidate whose leader watch etcd cancelled (compacted) still takes over when the leader dies", async () => {
    const a = await candidate("a", "/l4/");
    await waitFor("a leads", () => a.leadership.leading());
    const proxy = await startProxy(suite.etcd().url);
    // b reaches etcd through a proxy the test cuts; its TTL outlasts the cut, so only its watch
    // is hurt, not its registration. Its periodic campaign is off: this is about the watch.
    const b = await candidate("b", "/l4/", 5, proxy.url, 0);
    expect(b.leadership.leading()).toBe(false);
    proxy.cut();
    // While b is cut off, history moves on and is compacted past the revision b's leader watch
    // would resume from: etcd cancels that watch when b reconnects.
    for (let i = 0; i < 5; i++) await a.client.put("/l4/other").value(String(i));
    const rev = Number((await a.client.get("/l4/other").exec()).header.revision);
    await a.client.kv.compact({ revision: String(rev), physical: true });
    proxy.restore();
    await waitFor("b's registration to be kept alive again", () => b.membership.registrationFresh());
    // Give b's watch stream time to reconnect and be cancelled (the client backs off first).
    await new Promise((r) => setTimeout(r, 1500));
    await a.membership.stop(); // the leader leaves: its lease and with it the leader key are gone
    expect(await waitFor("b leads after a left", () => b.leadership.leading(), 6000)).toBeLessThan(6000);
    await b.leadership.stop();
    await b.membership.stop();
    await proxy.close();
  });
});
