import { describe, expect, it } from "vitest";
import { PolicyKind } from "../../src/core/policy.js";
import { WhyLog } from "../../src/server/why.js";

/** The memory of recent rejections is bounded in keys, entries per key and gateways per key. */
describe("WhyLog", () => {
  it("keeps the most recently rejected keys only, a ring of reasons each, a run for one subject counted once", () => {
    const log = new WhyLog({ maxKeys: 3, perKey: 2 });
    for (let k = 0; k < 5; k++) log.reject(`d/k=${k}`, "over_limit", "", k, () => "full");
    expect(log.size).toBe(3);
    expect(log.rejections("d/k=0")).toEqual([]);
    expect(log.rejections("d/k=4")).toEqual([
      { kind: "over_limit", text: "full", firstAt: 4, lastAt: 4, count: 1 },
    ]);
    // The same kind for the same subject: counted on the same entry, with the latest words; and
    // the key moves to the back, so the next new key evicts the least recently rejected, k=3.
    log.reject("d/k=2", "over_limit", "", 10, () => "full again");
    log.reject("d/k=5", "fair_share", "t1", 11, () => "share");
    expect(log.rejections("d/k=2")).toEqual([
      { kind: "over_limit", text: "full again", firstAt: 2, lastAt: 10, count: 2 },
    ]);
    expect(log.rejections("d/k=3")).toEqual([]);
    log.reject("d/k=5", "fair_share", "t2", 12, () => "a");
    log.reject("d/k=5", "priority", "t2", 13, () => "b");
    expect(log.rejections("d/k=5").map((r) => r.text)).toEqual(["a", "b"]);
  });

  it("makes the words only when read", () => {
    const log = new WhyLog();
    let made = 0;
    for (let i = 0; i < 100; i++) {
      log.reject("d/k=1", "over_limit", "", i, () => {
        made++;
        return "full";
      });
    }
    expect(made).toBe(0);
    expect(log.rejections("d/k=1")[0]!.count).toBe(100);
    expect(made).toBe(1);
  });

  it("notes a gateway's ALLOW only on a key already noted; gateways per key are bounded", () => {
    const log = new WhyLog({ gatewaysPerKey: 2 });
    log.policy("d/k=1", "gw-1", PolicyKind.ALLOW, 0, 0, 1);
    expect(log.size).toBe(0);
    log.policy("d/k=1", "gw-1", PolicyKind.REJECT_FRACTION, 5, 0.5, 2);
    log.policy("d/k=1", "gw-2", PolicyKind.ALLOW, 0, 0, 3);
    log.policy("d/k=1", "gw-3", PolicyKind.GRANT, 4, 0, 4);
    expect([...log.gateways("d/k=1").keys()]).toEqual(["gw-2", "gw-3"]);
    expect(log.gateways("d/k=1").get("gw-3")).toEqual({
      kind: PolicyKind.GRANT,
      units: 4,
      fraction: 0,
      at: 4,
    });
  });
});
