import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/core/errors.js";
import type { ReclaimRequest, ReplicateRequest, StandbyRequest } from "../../src/protocol/messages.js";
import type { EnvoyRateLimit } from "../../src/server/envoy.js";
import type { Limiter } from "../../src/server/limiter.js";
import type { Ownership } from "../../src/server/ownership.js";
import { MAX_RECLAIM_RANGES, PeerService } from "../../src/server/peer-service.js";

const ownership = { generation: () => 7 } as unknown as Ownership;

/** A PeerService whose Reclaim handler records what reaches it (the request path is not used). */
function service() {
  const reached: ReclaimRequest[] = [];
  const peer = new PeerService({
    limiter: {} as Limiter,
    envoy: {} as EnvoyRateLimit,
    ownership,
    receiveHandoff: () => ({ accepted: 0, generation: 7 }),
    reclaim: (req) => {
      reached.push(req);
      return { generation: 7 };
    },
  });
  return { peer, reached };
}

const valid: ReclaimRequest = {
  generation: 9,
  from: "s2",
  address: "10.0.0.2:8081",
  ranges: [{ start: 0, end: 2 ** 31 }],
};

describe("Peer.Reclaim input", () => {
  it("passes a well-formed request on", () => {
    const { peer, reached } = service();
    expect(peer.reclaim(valid)).toEqual({ generation: 7 });
    expect(reached).toEqual([valid]);
  });

  it.each<[string, Partial<ReclaimRequest>, RegExp]>([
    ["no generation", { generation: 0 }, /generation must be positive/],
    ["an empty sender id", { from: "" }, /reclaim from is empty/],
    [
      "an oversized sender id",
      { from: "x".repeat(5000) },
      /reclaim from is 5000 long, over the maximum of 256/,
    ],
    ["an address that is not host:port", { address: "evil" }, /address "evil" is not host:port/],
    ["an address with a path", { address: "a/b:80" }, /is not host:port/],
    ["no ranges", { ranges: [] }, /no ranges/],
    ["an empty range", { ranges: [{ start: 5, end: 5 }] }, /range \[5, 5\) is not within/],
    ["a range past 2^32", { ranges: [{ start: 0, end: 2 ** 32 + 1 }] }, /is not within \[0, 2\^32\)/],
    ["a NaN bound", { ranges: [{ start: Number.NaN, end: 3 }] }, /range \[NaN, 3\)/],
    [
      "too many ranges",
      { ranges: Array.from({ length: MAX_RECLAIM_RANGES + 1 }, (_, i) => ({ start: i, end: i + 1 })) },
      /65537 ranges, over the maximum of 65536/,
    ],
  ])("refuses %s, naming it, and changes nothing", (_, patch, message) => {
    const { peer, reached } = service();
    expect(() => peer.reclaim({ ...valid, ...patch })).toThrow(InvalidArgumentError);
    expect(() => peer.reclaim({ ...valid, ...patch })).toThrow(message);
    expect(reached).toEqual([]);
  });

  it("a server that is not a cluster member refuses with NOT_OWNER", () => {
    const peer = new PeerService({
      limiter: {} as Limiter,
      envoy: {} as EnvoyRateLimit,
      ownership,
      receiveHandoff: () => ({ accepted: 0, generation: 7 }),
    });
    expect(peer.reclaim(valid).error?.message).toMatch(/not a cluster member/);
  });
});

/** A PeerService whose Replicate and Standby handlers record what reaches them. */
function standbyService() {
  const reached: unknown[] = [];
  const peer = new PeerService({
    limiter: {} as Limiter,
    envoy: {} as EnvoyRateLimit,
    ownership,
    receiveHandoff: () => ({ accepted: 0, generation: 7 }),
    replicate: (req) => {
      reached.push(req);
      return { accepted: req.counters.length, generation: 7 };
    },
    standby: (req) => {
      reached.push(req);
      return { counters: [], nextOffset: 0, generation: 7 };
    },
  });
  return { peer, reached };
}

const counter = {
  key: "api/s=k",
  shard: "api/s=k",
  algorithm: "fixed_window",
  tRelMs: -5,
  x: 3,
  y: 0,
  expiresInMs: 60_000,
  leases: [],
  clients: [],
};
const replicate: ReplicateRequest = { from: "s1", generation: 9, counters: [counter], drained: false };

describe("Peer.Replicate input", () => {
  it("passes a well-formed request on", () => {
    const { peer, reached } = standbyService();
    expect(peer.replicate(replicate)).toEqual({ accepted: 1, generation: 7 });
    expect(reached).toEqual([replicate]);
  });

  it.each<[string, Partial<ReplicateRequest>, RegExp]>([
    ["an empty sender id", { from: "" }, /replicate from is empty/],
    [
      "an oversized sender id",
      { from: "x".repeat(300) },
      /replicate from is 300 long, over the maximum of 256/,
    ],
    ["no generation", { generation: 0 }, /replicate: generation must be positive/],
    ["a fractional generation", { generation: 1.5 }, /generation must be positive/],
    [
      "too many counters",
      { counters: Array.from({ length: 1_000_001 }, () => counter) },
      /replicate has 1000001 counters, over the maximum of maxHandoffCounters 1000000/,
    ],
    ["an empty counter key", { counters: [{ ...counter, key: "" }] }, /replicate counter "": key is empty/],
    [
      "an oversized counter key",
      { counters: [{ ...counter, key: "k".repeat(2000) }] },
      /key is 2000 long, over the maximum of 1024/,
    ],
    ["an oversized shard key", { counters: [{ ...counter, shard: "k".repeat(2000) }] }, /shard key too long/],
    ["an unknown algorithm", { counters: [{ ...counter, algorithm: "magic" }] }, /unknown algorithm magic/],
    ["a NaN count", { counters: [{ ...counter, x: Number.NaN }] }, /a number is not finite/],
    [
      "a negative lease",
      { counters: [{ ...counter, leases: [{ id: "l", amount: -1, expiresInMs: 5 }] }] },
      /bad lease/,
    ],
    [
      "too many clients on a counter",
      {
        counters: [
          {
            ...counter,
            clients: Array.from({ length: 4097 }, (_, i) => ({
              id: `g${i}`,
              demand: 0,
              held: 0,
              seenMsAgo: 0,
            })),
          },
        ],
      },
      /has 4097 clients, over the maximum of 4096 per key/,
    ],
  ])("refuses %s, naming it, and nothing reaches the node", (_, patch, message) => {
    const { peer, reached } = standbyService();
    expect(() => peer.replicate({ ...replicate, ...patch })).toThrow(InvalidArgumentError);
    expect(() => peer.replicate({ ...replicate, ...patch })).toThrow(message);
    expect(reached).toEqual([]);
  });
});

const standby: StandbyRequest = { of: "s1", generation: 9, ranges: [{ start: 0, end: 2 ** 31 }], offset: 0 };

describe("Peer.Standby input", () => {
  it("passes a well-formed request on", () => {
    const { peer, reached } = standbyService();
    expect(peer.standby(standby)).toEqual({ counters: [], nextOffset: 0, generation: 7 });
    expect(reached).toEqual([standby]);
  });

  it.each<[string, Partial<StandbyRequest>, RegExp]>([
    ["an empty member id", { of: "" }, /standby of is empty/],
    ["an oversized member id", { of: "x".repeat(300) }, /standby of is 300 long/],
    ["no generation", { generation: 0 }, /standby: generation must be positive/],
    ["no ranges", { ranges: [] }, /standby: no ranges/],
    ["a range past 2^32", { ranges: [{ start: 0, end: 2 ** 32 + 1 }] }, /standby: range \[0, 4294967297\)/],
    ["an empty range", { ranges: [{ start: 9, end: 9 }] }, /range \[9, 9\) is not within/],
    ["a negative offset", { offset: -1 }, /standby: offset -1 is not a whole number/],
    ["a fractional offset", { offset: 0.5 }, /offset 0.5/],
  ])("refuses %s, naming it, and nothing reaches the node", (_, patch, message) => {
    const { peer, reached } = standbyService();
    expect(() => peer.standby({ ...standby, ...patch })).toThrow(InvalidArgumentError);
    expect(() => peer.standby({ ...standby, ...patch })).toThrow(message);
    expect(reached).toEqual([]);
  });

  it("a server that is not a cluster member refuses both with NOT_OWNER", () => {
    const peer = new PeerService({
      limiter: {} as Limiter,
      envoy: {} as EnvoyRateLimit,
      ownership,
      receiveHandoff: () => ({ accepted: 0, generation: 7 }),
    });
    expect(peer.replicate(replicate).error?.message).toMatch(/not a cluster member/);
    expect(peer.standby(standby).error?.message).toMatch(/not a cluster member/);
  });
});

describe("Peer.Forward of settles", () => {
  it("settles each part at this server, in order; a part that throws carries its error", async () => {
    const seen: string[] = [];
    const limiter = {
      settle: (r: { ticketId?: string }) => {
        seen.push(r.ticketId ?? "");
        if (r.ticketId === "bad") throw new InvalidArgumentError("ticket_id is 99 long");
        return { generation: 7, remaining: 3 };
      },
    } as unknown as Limiter;
    const peer = new PeerService({
      limiter,
      envoy: {} as EnvoyRateLimit,
      ownership,
      receiveHandoff: () => ({ accepted: 0, generation: 7 }),
      reclaim: () => ({ generation: 7 }),
    });
    const res = await peer.forward({
      generation: 7,
      envoy: [],
      checks: [],
      settles: [
        { key: "k", delta: 0, generation: 7, ticketId: "t1", actual: [1] },
        { key: "k", delta: 0, generation: 7, ticketId: "bad", actual: [1] },
      ],
    });
    expect(seen).toEqual(["t1", "bad"]);
    expect(res.settles![0]).toEqual({ generation: 7, remaining: 3 });
    expect(res.settles![1]!.error?.message).toMatch(/ticket_id is 99 long/);
  });
});
