import { describe, expect, it } from "vitest";
import { Replicator } from "../../src/cluster/replicator.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine, limitDefaults } from "../../src/core/index.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import type { ReplicateRequest } from "../../src/protocol/messages.js";

const log = { info() {}, warn() {}, error() {}, debug() {} };
const fw = limitDefaults({ algorithm: "fixed_window", limit: 100, windowMs: 60_000 });
const members = (...ids: string[]): Member[] => ids.map((id, i) => ({ id, address: `10.0.0.${i}:8081` }));

function setup(ids: string[], opts: { owns?: (point: number) => boolean; fail?: () => boolean } = {}) {
  const clock = new ManualClock();
  const engine = new Engine({ trackChanges: true });
  let a = new Assignment(3, members(...ids), new Uint32Array([0]), new Uint16Array([0]));
  const sent: { to: string; req: ReplicateRequest }[] = [];
  const outcomes: [number, boolean][] = [];
  const r = new Replicator({
    selfId: "s1",
    counters: engine,
    ownership: { current: () => a, generation: () => a.generation, owns: opts.owns ?? (() => true) },
    peer: (address) => ({
      replicate: async (req) => {
        if (opts.fail?.()) throw new Error("14 UNAVAILABLE");
        sent.push({ to: address, req: req as ReplicateRequest });
        return { accepted: req.counters?.length ?? 0, generation: 3 };
      },
    }),
    clock,
    log,
    intervalMs: 200,
    maxMessageBytes: 1 << 20,
    chunk: 3,
    onSent: (_to, n, ok) => outcomes.push([n, ok]),
  });
  const setMembers = (...next: string[]) => {
    a = new Assignment(a.generation + 1, members(...next), new Uint32Array([0]), new Uint16Array([0]));
  };
  return { clock, engine, r, sent, outcomes, setMembers };
}

describe("Replicator", () => {
  it("every interval sends the counters changed since the last round to the buddy, in chunks", async () => {
    const { clock, engine, r, sent } = setup(["s3", "s1", "s2"]);
    for (let i = 0; i < 7; i++) engine.check(`k${i}`, fw, 1, clock.now());
    r.start();
    clock.advance(200);
    await Promise.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    expect(sent.map((s) => s.to)).toEqual(["10.0.0.2:8081", "10.0.0.2:8081", "10.0.0.2:8081"]); // s2
    expect(sent.map((s) => s.req.counters.length)).toEqual([3, 3, 1]);
    expect(sent[0]!.req).toMatchObject({ from: "s1", generation: 3, drained: false });
    sent.length = 0;
    engine.check("k0", fw, 1, clock.now());
    await r.round();
    expect(sent.flatMap((s) => s.req.counters.map((c) => [c.key, c.x]))).toEqual([["k0", 2]]);
    r.stop();
  });

  it("only counters of ranges this server owns", async () => {
    const { clock, engine, r, sent } = setup(["s1", "s2"], { owns: (p) => p === keyPoint("mine") });
    engine.check("mine", fw, 1, clock.now());
    engine.check("theirs", fw, 1, clock.now());
    await r.round();
    expect(sent.flatMap((s) => s.req.counters.map((c) => c.key))).toEqual(["mine"]);
  });

  it("a failed call puts its counters back as changed: they go in the next round", async () => {
    let failing = true;
    const { clock, engine, r, sent, outcomes } = setup(["s1", "s2"], { fail: () => failing });
    engine.check("a", fw, 1, clock.now());
    await r.round();
    expect(sent).toEqual([]);
    expect(outcomes).toEqual([[1, false]]);
    failing = false;
    await r.round();
    expect(sent.flatMap((s) => s.req.counters.map((c) => c.key))).toEqual(["a"]);
  });

  it("a new buddy gets every counter, changed lately or not", async () => {
    const { clock, engine, r, sent, setMembers } = setup(["s1", "s3"]);
    engine.check("a", fw, 1, clock.now());
    engine.check("b", fw, 1, clock.now());
    await r.round();
    sent.length = 0;
    await r.round();
    expect(sent).toEqual([]);
    setMembers("s1", "s2", "s3"); // s1's buddy: s3 -> s2
    await r.round();
    expect(sent.map((s) => s.to)).toEqual(["10.0.0.1:8081"]);
    expect(sent[0]!.req.counters.map((c) => c.key).sort()).toEqual(["a", "b"]);
  });

  it("a single member has no buddy: nothing sent; a buddy that comes later gets every counter", async () => {
    const { clock, engine, r, sent, setMembers } = setup(["s1"]);
    engine.check("a", fw, 1, clock.now());
    await r.round();
    expect(sent).toEqual([]);
    setMembers("s1", "s2");
    await r.round();
    expect(sent.flatMap((s) => s.req.counters.map((c) => c.key))).toEqual(["a"]);
  });

  it("drained tells the buddy to drop the copies", async () => {
    const { r, sent } = setup(["s1", "s2"]);
    await r.drained();
    expect(sent.map((s) => s.req)).toEqual([{ from: "s1", generation: 3, counters: [], drained: true }]);
  });
});
