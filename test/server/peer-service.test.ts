import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/core/errors.js";
import type { ReclaimRequest } from "../../src/protocol/messages.js";
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
