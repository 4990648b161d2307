import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../../src/protocol/rpc.js";
import { startTwoServers, type TwoServers } from "./two-servers.js";

/** "Why" across servers: A owns no key and forwards to B (in-process, real Peer channel). */
describe("why, asked of a server that does not own the key", () => {
  let two: TwoServers;
  beforeAll(async () => {
    two = await startTwoServers();
  });
  afterAll(() => two?.stop());

  it("a forwarded Check carries explain to the owner, whose explanation comes back", async () => {
    const res = await two.rpc.check({ items: [{ key: "d/k=1", cost: 3 }], explain: true });
    expect(res.results[0]!.allowed).toBe(false);
    expect(res.results[0]!.explanation).toMatch(
      /^over limit: d\/k#k_rpm \(2 per 60 s, fixed_window\) had 2 left, the request asked 3/,
    );
  });

  it("Inspect at a non-owner names the owner; the owner has the rejection", async () => {
    const there = await two.rpc.inspect({ key: "d/k=1" });
    expect(there.owned).toBe(false);
    expect(there.ownerAddress).toBe(two.bAddress);
    expect(there.text).toContain(`owner       b at ${two.bAddress}: NOT this server`);
    const owner = connect(two.bAddress);
    try {
      const x = await owner.inspect({ key: "d/k=1" });
      expect(x.owned).toBe(true);
      expect(x.text).toMatch(/over limit: d\/k#k_rpm .* had 2 left, the request asked 3/);
    } finally {
      owner.close();
    }
  });
});
