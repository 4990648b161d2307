import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { CounterStore } from "../../src/cluster/handoff.js";
import { ClusterNode } from "../../src/cluster/node.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { systemClock } from "../../src/core/clock.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import { ErrorCode, itemError } from "../../src/protocol/item-errors.js";
import type {
  HandoffRequest,
  ReclaimRequest,
  ReclaimResponse,
  ReplicateRequest,
  StandbyRequest,
} from "../../src/protocol/messages.js";
import { waitFor } from "../../src/testkit/wait.js";
import { etcdPerSuite, startProxy } from "./etcd-harness.js";
import { inRanges, listStore, snapshot, takeOnce } from "./handoff-fakes.js";

const log = pino({ level: "silent" });
const store = listStore();

/**
 * Servers (cluster nodes in this process) cut off from etcd by a proxy. Their peers are asked for
 * their generation through an injected function that reads the other node directly, standing for
 * the GetClusterView call a real server makes.
 */
describe("a server cut off from etcd", () => {
  const suite = etcdPerSuite();

  async function cluster(
    prefix: string,
    proxied: { a: boolean; b: boolean },
    stores: { a?: CounterStore; b?: CounterStore } = {},
    /** Set: what every peer answers when asked its generation (a confused or forged peer). */
    forged?: { generation: number },
    opts: {
      handoffTimeoutMs?: number;
      /** What the peer at an address answers a reclaim instead of the node (undefined: the node). */
      reclaim?: (address: string) => ReclaimResponse | undefined;
    } = {},
  ) {
    const proxies = {
      a: proxied.a ? await startProxy(suite.etcd().url) : undefined,
      b: proxied.b ? await startProxy(suite.etcd().url) : undefined,
    };
    const nodes = new Map<string, ClusterNode>();
    const peerGeneration = async (address: string) => {
      if (forged) return forged.generation;
      const n = nodes.get(address);
      if (!n) throw new Error(`no peer at ${address}`);
      return n.ownership.generation();
    };
    // Peer calls go straight to the other node (a stopped node answers UNAVAILABLE).
    const stopped = new Set<string>();
    const peer = (address: string): PeerRpc => {
      const n = () => {
        const node = nodes.get(address);
        if (!node || stopped.has(address)) throw new Error(`14 UNAVAILABLE: no peer at ${address}`);
        return node;
      };
      return {
        forward: () => Promise.reject(new Error("unused")),
        handoff: async (req) => n().handoff.receive(req as HandoffRequest),
        reclaim: async (req) => opts.reclaim?.(address) ?? n().reclaim(req as ReclaimRequest),
        replicate: async (req) => n().replicate(req as ReplicateRequest),
        standby: async (req) => n().standbyCopies(req as StandbyRequest),
        close() {},
      };
    };
    const make = (id: string, assigner: boolean) =>
      new ClusterNode(
        {
          etcd: [proxies[id as "a" | "b"]?.url ?? suite.etcd().url],
          prefix,
          id,
          capacity: 1,
          leaseTtlSeconds: 2,
          assigner,
          handoffTimeoutMs: opts.handoffTimeoutMs ?? 100,
          loadIntervalMs: 0,
          rebalanceIntervalMs: 0,
        },
        stores[id as "a" | "b"] ?? store,
        { clock: systemClock, log, peerGeneration, peer },
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
    return { a, b, key, proxies, stop, stopped, make, nodes };
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

  it("the new owner reclaims the counters of a server cut off from etcd before deciding its keys", async () => {
    // b holds a counter for every key it is asked about; a records what it is given.
    const taken: string[] = [];
    const bStore: CounterStore = {
      takeRanges: takeOnce((ranges) => {
        const out = held.filter((c) => inRanges(c, ranges));
        taken.push(...out.map((c) => c.key));
        return out;
      }),
      putCounters: (s) => s.length,
    };
    const put: CounterSnapshot[] = [];
    // What a said of b's key when b's counters arrived: still waiting for them, not yet deciding.
    const verdictAtPut: string[] = [];
    let nodeA: ClusterNode | undefined;
    const aStore: CounterStore = {
      takeRanges: () => ({ next: () => ({ counters: [], more: false }) }),
      putCounters: (s) => {
        put.push(...s);
        for (const c of s) verdictAtPut.push(nodeA!.ownership.check(c.key));
        return s.length;
      },
    };
    const held: CounterSnapshot[] = [];
    const { a, b, key, proxies, stop } = await cluster(
      "/np3/",
      { a: false, b: true },
      { a: aStore, b: bStore },
    );
    try {
      held.push(snapshot(key));
      nodeA = a;
      const g = b.ownership.generation();
      proxies.b!.cut();
      // Before Peer.Reclaim, a served b's key as soon as it was given it, with an empty counter
      // (b, cut off from etcd, could not hand over): up to twice the limit in that window.
      await waitFor(
        "a is given b's key",
        () => a.ownership.generation() > g && a.ownership.owns(keyPoint(key)),
        15_000,
      );
      await waitFor("a serves b's key", () => a.ownership.check(key) === "own", 5_000);
      expect(put.map((c) => c.key)).toEqual([key]);
      expect(verdictAtPut).toEqual(["not_ready"]);
      expect(taken).toEqual([key]);
      // b stopped deciding the moment it learnt of the newer generation.
      expect(b.ownership.check(key)).toBe("not_owner");
    } finally {
      proxies.b!.restore();
      await stop();
    }
  });

  it("a previous owner that refuses the reclaim (registered again) keeps its counts: nobody decides its key without them", async () => {
    // The counters each node holds, by key (a fake store: take removes, put adds).
    const held = { a: new Map<string, CounterSnapshot>(), b: new Map<string, CounterSnapshot>() };
    const store = (m: Map<string, CounterSnapshot>): CounterStore => ({
      takeRanges: takeOnce((ranges) => {
        const out = [...m.values()].filter((c) => inRanges(c, ranges));
        for (const c of out) m.delete(c.key);
        return out;
      }),
      putCounters: (s) => {
        for (const c of s) m.set(c.key, c);
        return s.length;
      },
    });
    let refused = 0;
    const { a, b, key, proxies, stop } = await cluster(
      "/np7/",
      { a: false, b: true },
      { a: store(held.a), b: store(held.b) },
      undefined,
      {
        handoffTimeoutMs: 30_000,
        // b answers as a server that registered again and whose view is catching up does.
        reclaim: (address) => {
          if (address !== "127.0.0.1:2") return undefined;
          refused++;
          return {
            generation: 0,
            error: itemError(
              ErrorCode.NOT_OWNER,
              "this server's registration is live; its counters follow by handoff",
            ),
          };
        },
      },
    );
    const nodes = { a, b };
    /** Each time a node decided b's key while its counter was elsewhere (or nowhere). */
    const blind: string[] = [];
    const look = () => {
      for (const id of ["a", "b"] as const)
        if (!held[id].has(key) && nodes[id].ownership.check(key) === "own") blind.push(id);
    };
    try {
      held.b.set(key, snapshot(key));
      const g = b.ownership.generation();
      proxies.b!.cut();
      await waitFor(
        "a is given b's key and b refuses its reclaim",
        () => {
          look();
          return a.ownership.generation() > g && a.ownership.owns(keyPoint(key)) && refused > 0;
        },
        15_000,
        20,
      );
      proxies.b!.restore();
      // b catches up, registered again: it may hand its counter to a or get its ranges back. Before,
      // a took the standby copies (none) at once and decided b's key from an empty counter, and a
      // counter b handed over after a's move back had begun was refused there: the counts were lost.
      await waitFor(
        "both on one generation, the key's counter at its owner",
        () => {
          look();
          const owner = a.ownership.ownerOf(key)?.id as "a" | "b" | undefined;
          return (
            a.ownership.generation() === b.ownership.generation() &&
            a.ownership.ready() &&
            b.ownership.ready() &&
            owner !== undefined &&
            held[owner].has(key)
          );
        },
        20_000,
        20,
      );
      expect(blind).toEqual([]);
    } finally {
      proxies.b!.restore();
      await stop();
    }
  }, 60_000);

  it("a range whose previous owner is gone is served at once (nobody to reclaim from)", async () => {
    const { a, b, key, proxies, stop, stopped } = await cluster("/np4/", { a: false, b: true });
    try {
      const g = b.ownership.generation();
      stopped.add("127.0.0.1:2"); // b's Peer service answers nothing, as a dead server's
      proxies.b!.cut();
      await waitFor(
        "a is given b's key",
        () => a.ownership.generation() > g && a.ownership.owns(keyPoint(key)),
        15_000,
      );
      await waitFor("a serves b's key", () => a.ownership.check(key) === "own", 1_000);
    } finally {
      proxies.b!.restore();
      await stop();
    }
  });

  it("a generation a peer reports that etcd never had stops a server only until etcd says otherwise", async () => {
    const forged = { generation: 0 };
    const { b, key, proxies, stop } = await cluster("/np5/", { a: false, b: true }, {}, forged);
    try {
      forged.generation = b.ownership.generation() + 1000;
      proxies.b!.cut();
      await waitFor(
        "b stops deciding (a peer says a newer generation exists)",
        () => !b.ownership.ready(),
        6_000,
      );
      proxies.b!.restore();
      // Registered again, b reads the assignment from etcd itself: generation 1000-odd is not there.
      await waitFor(
        "b decides again",
        () => b.ownership.ready() && b.ownership.check(key) !== "not_owner",
        15_000,
      );
    } finally {
      await stop();
    }
  });

  it("a server whose assignment watch died still learns new generations (a direct read every second)", async () => {
    const { a, b, stop, make, nodes } = await cluster("/np6/", { a: false, b: false });
    const c = make("c", false);
    try {
      // Past the server's first direct read (it reads once at its first lease-guard look).
      await new Promise((r) => setTimeout(r, 600));
      // The watch dies without a word (as one did after a partition and a compaction).
      await (b as unknown as { view: { stop(): Promise<void> } }).view.stop();
      const g = b.ownership.generation();
      nodes.set("127.0.0.1:3", c);
      await c.start("127.0.0.1:3");
      await waitFor(
        "a installs the generation with c",
        () => a.ownership.current()?.members.length === 3,
        15_000,
      );
      expect(a.ownership.generation()).toBeGreaterThan(g);
      // Before: b stayed on its generation for good.
      await waitFor("b catches up", () => b.ownership.generation() === a.ownership.generation(), 5_000);
    } finally {
      await c.stop().catch(() => {});
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
