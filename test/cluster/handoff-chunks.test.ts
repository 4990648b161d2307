import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Handoff } from "../../src/cluster/handoff.js";
import type { PeerRpc } from "../../src/cluster/peers.js";
import { ManualClock } from "../../src/core/clock.js";
import type { Member } from "../../src/keyspace/assignment.js";
import type { HandoffRequest } from "../../src/protocol/messages.js";
import { root } from "../../src/protocol/proto.js";
import { listStore, snapshot } from "./handoff-fakes.js";

const log = pino({ level: "silent" });
const m = (id: string): Member => ({ id, address: `${id}:1` });
const HandoffRequestType = root.lookupType("shardlimit.v1.HandoffRequest");

describe("handoff chunks are bounded by bytes", () => {
  it("counters whose snapshots total more than the message limit arrive in several chunks, all of them", async () => {
    const clock = new ManualClock();
    const limit = 64 * 1024;
    const counters = Array.from({ length: 20 }, (_, i) => snapshot(`d/k=hot${i}`, 300));
    const received: HandoffRequest[] = [];
    const sent: [string, number, boolean][] = [];
    // The receiver's gRPC server refuses a message over its receive limit, as grpc-js does.
    const peer: Pick<PeerRpc, "handoff"> = {
      handoff: async (req) => {
        const bytes = HandoffRequestType.encode(req).finish().length;
        if (bytes > limit)
          throw new Error(`8 RESOURCE_EXHAUSTED: Received message larger than max (${bytes} vs. ${limit})`);
        received.push(req as HandoffRequest);
        return { accepted: (req as HandoffRequest).counters.length, generation: 2 };
      },
    };
    const handoff = new Handoff({
      selfId: "a",
      store: listStore(counters),
      ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
      peer: () => peer,
      clock,
      log,
      maxMessageBytes: limit,
      // No retries: an oversized chunk fails the same way every time.
      giveUpMs: 0,
      onSent: (to, n, ok) => sent.push([to, n, ok]),
    });
    await handoff.send({
      generation: 2,
      lost: [{ start: 0, end: 2 ** 32, from: m("a"), to: m("b") }],
      gained: [],
      pending: [],
      orphaned: [],
    });
    expect(sent).toEqual([["b", 20, true]]);
    expect(received.length).toBeGreaterThan(1);
    expect(received.flatMap((r) => r.counters.map((c) => c.key))).toEqual(counters.map((c) => c.key));
    expect(received.map((r) => r.done)).toEqual(received.map((_, i) => i === received.length - 1));
  });
});

describe("a handoff's first chunks are small", () => {
  it("the first chunk carries a few counters and the sizes double up to the chunk size, so cold code on either side runs over a few counters, not 2,000, in one turn", async () => {
    const clock = new ManualClock();
    const counters = Array.from({ length: 10_000 }, (_, i) => snapshot(`d/k=${i}`, 0));
    const sizes: number[] = [];
    const peer: Pick<PeerRpc, "handoff"> = {
      handoff: async (req) => {
        sizes.push((req as HandoffRequest).counters.length);
        return { accepted: (req as HandoffRequest).counters.length, generation: 2 };
      },
    };
    const handoff = new Handoff({
      selfId: "a",
      store: listStore(counters),
      ownership: new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 1000 }),
      peer: () => peer,
      clock,
      log,
      chunk: 2000,
    });
    await handoff.send({
      generation: 2,
      lost: [{ start: 0, end: 2 ** 32, from: m("a"), to: m("b") }],
      gained: [],
      pending: [],
      orphaned: [],
    });
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(10_000);
    expect(sizes.slice(0, 6)).toEqual([125, 250, 500, 1000, 2000, 2000]);
    expect(Math.max(...sizes)).toBe(2000);
  });
});
