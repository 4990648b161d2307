import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterNode } from "../../src/cluster/node.js";
import { systemClock } from "../../src/core/clock.js";
import { waitFor } from "../../src/testkit/wait.js";
import { etcdPerSuite, startProxy } from "./etcd-harness.js";
import { listStore } from "./handoff-fakes.js";

const log = pino({ level: "silent" });
const store = listStore();

/**
 * Servers (cluster nodes in this process) cut off from etcd by a proxy. Their peers are asked for
 * their generation through an injected function that reads the other node directly, standing for
 * the GetClusterView call a real server makes.
 */
describe("a server cut off from etcd", () => {
  const suite = etcdPerSuite();

  async function cluster(prefix: string, proxied: { a: boolean; b: boolean }) {
    const proxies = {
      a: proxied.a ? await startProxy(suite.etcd().url) : undefined,
      b: proxied.b ? await startProxy(suite.etcd().url) : undefined,
    };
    const nodes = new Map<string, ClusterNode>();
    const peerGeneration = async (address: string) => {
      const n = nodes.get(address);
      if (!n) throw new Error(`no peer at ${address}`);
      return n.ownership.generation();
    };
    const make = (id: "a" | "b", assigner: boolean) =>
      new ClusterNode(
        {
          etcd: [proxies[id]?.url ?? suite.etcd().url],
          prefix,
          id,
          capacity: 1,
          leaseTtlSeconds: 2,
          assigner,
          handoffTimeoutMs: 100,
          loadIntervalMs: 0,
          rebalanceIntervalMs: 0,
        },
        store,
        { clock: systemClock, log, peerGeneration },
      );
    const a = make("a", true);
    const b = make("b", false);
    nodes.set("127.0.0.1:1", a);
    nodes.set("127.0.0.1:2", b);
    await a.start("127.0.0.1:1");
    await b.start("127.0.0.1:2");
    await waitFor(
      "an assignment with both on both",
      () =>
        [a, b].every((n) => n.ownership.current()?.members.length === 2 && n.ownership.ready()) &&
        a.ownership.generation() === b.ownership.generation(),
      15_000,
    );
    // A key b owns (b holds about half of the key space).
    let key = "";
    for (let i = 0; !key; i++) if (b.ownership.ownerOf(`k${i}`)?.id === "b") key = `k${i}`;
    const stop = async () => {
      for (const n of [a, b]) await n.stop().catch(() => {});
      for (const p of Object.values(proxies)) await p?.close();
    };
    return { a, b, key, proxies, stop };
  }

  it("stops deciding its old slices once the assigner could have given them away", async () => {
    const { a, b, key, proxies, stop } = await cluster("/np1/", { a: false, b: true });
    try {
      const g = b.ownership.generation();
      expect(b.ownership.check(key)).toBe("own");
      proxies.b!.cut();
      // b's lease expires in etcd; the assigner (on a) writes a generation without b, and a
      // decides b's old keys from then on.
      await waitFor(
        "a owns b's key",
        () => a.ownership.generation() > g && a.ownership.check(key) === "own",
        15_000,
      );
      // b must not decide them too (two owners: up to twice the limit). It learns of the newer
      // generation from its peer within one poll.
      await waitFor("b stops deciding", () => b.ownership.check(key) !== "own", 1500);
      expect(b.ownership.check(key)).toBe("not_owner");
      expect(b.ownership.ready()).toBe(false);
      // Back in touch with etcd: b re-registers, catches up and serves what it is given again.
      proxies.b!.restore();
      await waitFor(
        "b back in the assignment and ready",
        () => b.ownership.current()?.members.some((m) => m.id === "b") === true && b.ownership.ready(),
        15_000,
      );
    } finally {
      await stop();
    }
  });

  it("keeps serving its slices when etcd is gone for every server (static stability)", async () => {
    const { a, b, key, proxies, stop } = await cluster("/np2/", { a: true, b: true });
    try {
      proxies.a!.cut();
      proxies.b!.cut();
      // Longer than the lease TTL: both may have lost their leases, but nobody could have written a
      // new assignment, and the peer confirms the generation.
      const t0 = Date.now();
      while (Date.now() - t0 < 3500) {
        expect(b.ownership.check(key)).toBe("own");
        expect(a.ownership.ready() && b.ownership.ready()).toBe(true);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await stop();
    }
  });
});
