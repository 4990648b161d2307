import { describe, expect, it } from "vitest";
import { PolicyKind } from "../../src/core/policy.js";
import { WhyLog } from "../../src/server/why.js";

/** The memory of recent rejections is bounded in keys, entries per key and gateways per key. */
describe("WhyLog", () => {
  it("keeps the most recently rejected keys only, a ring of reasons each, repeats counted once", () => {
    const log = new WhyLog({ maxKeys: 3, perKey: 2 });
    for (let k = 0; k < 5; k++) log.reject(`d/k=${k}`, "over_limit", "full", k);
    expect(log.size).toBe(3);
    expect(log.rejections("d/k=0")).toEqual([]);
    expect(log.rejections("d/k=4")).toEqual([
      { kind: "over_limit", text: "full", firstAt: 4, lastAt: 4, count: 1 },
    ]);
    log.reject("d/k=2", "over_limit", "full", 10); // repeat: counted on the same entry, and moved to the back
    log.reject("d/k=5", "fair_share", "share", 11); // evicts the least recently rejected: k=3
    expect(log.rejections("d/k=2")[0]).toMatchObject({ count: 2, firstAt: 2, lastAt: 10 });
    expect(log.rejections("d/k=3")).toEqual([]);
    log.reject("d/k=5", "priority", "a", 12);
    log.reject("d/k=5", "priority", "b", 13);
    expect(log.rejections("d/k=5").map((r) => r.text)).toEqual(["a", "b"]);
  });

  it("notes a gateway's ALLOW only on a key already noted; gateways per key are bounded", () => {
    const log = new WhyLog({ gatewaysPerKey: 2 });
    log.policy("d/k=1", "gw-1", PolicyKind.ALLOW, 0, 0, 1);
    expect(log.size).toBe(0);
    log.policy("d/k=1", "gw-1", PolicyKind.REJECT_FRACTION, 5, 0.5, 2);
    log.policy("d/k=1", "gw-2", PolicyKind.ALLOW, 0, 0, 3);
    log.policy("d/k=1", "gw-3", PolicyKind.GRANT, 4, 0, 4);
    expect([...log.gateways("d/k=1").keys()]).toEqual(["gw-2", "gw-3"]);
    expect(log.gateways("d/k=1").get("gw-3")).toEqual({ policy: "GRANT", units: 4, fraction: 0, at: 4 });
  });
});
