import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Assigner } from "../../src/cluster/assigner.js";
import { AssignmentView } from "../../src/cluster/assignment-view.js";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Leadership } from "../../src/cluster/leadership.js";
import { Membership } from "../../src/cluster/membership.js";
import { systemClock } from "../../src/core/clock.js";
import { movedFraction } from "../../src/keyspace/assignment.js";
import { waitFor as waitUntil } from "../../src/testkit/wait.js";
import { etcdPerSuite } from "./etcd-harness.js";

const log = pino({ level: "silent" });

const waitFor = (what: string, ok: () => boolean) => waitUntil(what, ok, 15_000);

describe("assigner on a real etcd", () => {
  const suite = etcdPerSuite();

  async function node(id: string, prefix: string) {
    const client = suite.client();
    let assigner: Assigner | undefined;
    const membership = new Membership({
      client,
      prefix,
      self: { id, address: `127.0.0.1:${id.charCodeAt(0)}`, capacity: 1, startedAt: 0 },
      ttlSeconds: 2,
      clock: systemClock,
      log,
      onMembers: (ms) => assigner?.setMembers(ms),
    });
    const leadership = new Leadership({
      client,
      key: `${prefix}assigner/leader`,
      id,
      membership,
      clock: systemClock,
      log,
      onChange: () => assigner?.kick(),
    });
    const view = new AssignmentView({
      client,
      prefix,
      clock: systemClock,
      log,
      onChange: () => assigner?.kick(),
    });
    assigner = new Assigner({ prefix, view, leadership, clock: systemClock, log });
    await view.start();
    await membership.start();
    assigner.setMembers(membership.current);
    await leadership.start();
    const ownership = new ClusterOwnership({ selfId: id, clock: systemClock, handoffTimeoutMs: 3000 });
    return {
      id,
      membership,
      leadership,
      assigner,
      ownership,
      sync() {
        const a = assigner!.current();
        if (a) ownership.update(a);
      },
      async stop() {
        await leadership.stop();
        await assigner!.stop();
        await view.stop();
        await membership.stop();
      },
    };
  }

  it("assigns every key to exactly one member, and a leave moves only the leaver's slices", async () => {
    const nodes = [await node("a", "/as1/"), await node("b", "/as1/"), await node("c", "/as1/")];
    await waitFor("an assignment naming all three on every node", () =>
      nodes.every((n) => n.assigner.current()?.members.length === 3),
    );
    for (const n of nodes) n.sync();
    const g1 = nodes[0]!.assigner.current()!;
    expect(nodes.every((n) => n.ownership.generation() === g1.generation)).toBe(true);
    for (let k = 0; k < 2000; k++) {
      const owners = nodes.filter((n) => n.ownership.check(`tenant-${k}`) !== "not_owner");
      expect(owners).toHaveLength(1);
    }
    expect(nodes.reduce((s, n) => s + n.assigner.written, 0)).toBeGreaterThanOrEqual(1);

    const cShare = (() => {
      let w = 0;
      const ci = g1.members.findIndex((m) => m.id === "c");
      for (let i = 0; i < g1.slices; i++) if (g1.owners[i] === ci) w += g1.width(i);
      return w / 2 ** 32;
    })();
    await nodes[2]!.stop();
    const rest = nodes.slice(0, 2);
    await waitFor("a new generation without c", () =>
      rest.every(
        (n) =>
          (n.assigner.current()?.generation ?? 0) > g1.generation &&
          n.assigner.current()!.members.length === 2,
      ),
    );
    const g2 = rest[0]!.assigner.current()!;
    expect(movedFraction(g1, g2)).toBeCloseTo(cShare, 9);
    for (const n of rest) n.sync();
    for (let k = 0; k < 2000; k++) {
      expect(rest.filter((n) => n.ownership.check(`tenant-${k}`) !== "not_owner")).toHaveLength(1);
    }
    for (const n of rest) await n.stop();
  });

  it("generations keep growing across a leader crash; only the leader writes", async () => {
    const a = await node("a", "/as2/");
    await waitFor("first assignment", () => a.assigner.current() !== undefined);
    const b = await node("b", "/as2/");
    await waitFor("b included", () => a.assigner.current()!.members.length === 2);
    const g = a.assigner.current()!.generation;
    expect(b.assigner.written).toBe(0); // a leads
    a.membership.currentLease()!.release(); // a crashes
    await waitFor("b leads and writes a generation without a", () => {
      const cur = b.assigner.current();
      return b.leadership.leading() && cur !== undefined && cur.generation > g && cur.members.length === 1;
    });
    expect(b.assigner.current()!.members[0]!.id).toBe("b");
    await b.stop();
  });
});
