import { describe, expect, it } from "vitest";
import type { ClientKey } from "../../src/client/client-key.js";
import { KeyTable, Unlimited } from "../../src/client/key-table.js";
import { OwnerChannel, type PendingReport } from "../../src/client/owner-channel.js";
import { compileSources } from "../../src/config/load.js";
import { allowPolicy } from "../../src/core/policy.js";

const YAML = `domain: api
descriptors:
  - key: minute
    rate_limit: { unit: minute, requests_per_unit: 600 }
`;
const config = (text = YAML) => compileSources([{ file: "a.yaml", text }]);

function pending(): PendingReport {
  const req = {
    clientId: "c",
    seq: 1,
    generation: 0,
    intervalMs: 100,
    entries: [],
    keyEpoch: 0,
    spanMs: 100,
  };
  return { req, keys: [], drained: [], resent: [], incarnation: "", attempts: 0 };
}

describe("OwnerChannel", () => {
  it("keeps one report in flight and a failed one for re-sending first", () => {
    const ch = new OwnerChannel("a:1", 0);
    const p = pending();
    ch.sent(p);
    expect(ch.busy).toBe(true);
    expect(ch.takeRetry()).toBeUndefined();
    expect(ch.settled(p)).toBe(true);
    expect(ch.markFailed(p, "reset")).toBe(1);
    expect(ch.down).toBe(true);
    expect(ch.busy).toBe(true);
    expect(ch.takeRetry()).toBe(p);
    ch.sent(p);
    expect(p.attempts).toBe(2);
    expect(ch.abandon()).toEqual([p]);
    expect(ch.settled(p)).toBe(false); // a late answer after the owner left
  });

  it("tells a recovery, a new key epoch and a restarted owner apart", () => {
    const ch = new OwnerChannel("a:1", 0);
    expect(ch.markAnswered(0, "i1")).toEqual({ recovered: false, handlesValid: true, restarted: false });
    ch.markFailed(pending(), "x");
    expect(ch.markAnswered(3, "i2")).toEqual({ recovered: true, handlesValid: false, restarted: true });
    expect([ch.keyEpoch, ch.incarnation, ch.failures]).toEqual([3, "i2", 0]);
  });
});

describe("KeyTable", () => {
  it("keeps a counter across a reload that left its limit as it was, and replaces a changed one", () => {
    const added: ClientKey[] = [];
    const t = new KeyTable({ idleKeyMs: 60_000, maxKeys: 10, reportIntervalMs: 100 }, (k) => added.push(k));
    expect(t.entry("api/minute=x", 1)).toBeUndefined();
    t.setConfig(config());
    const k = t.entry("api/minute=x", 1) as ClientKey;
    expect(added).toEqual([k]);
    t.setConfig(config());
    expect(t.entry("api/minute=x", 1)).toBe(k);
    t.setConfig(config(YAML.replace("600", "700")));
    const next = t.entry("api/minute=x", 1) as ClientKey;
    expect(next).not.toBe(k);
    expect(k.current()).toBe(next);
    expect(t.isCurrent(k)).toBe(false);
    expect(t.entry("other/x=y", 1)).toBeInstanceOf(Unlimited); // no limit applies
  });
});

describe("ClientKey", () => {
  it("a policy ends when the wall clock steps back before its arrival, an ALLOW included", () => {
    const t = new KeyTable({ idleKeyMs: 60_000, maxKeys: 10, reportIntervalMs: 100 }, () => {});
    t.setConfig(config());
    const k = t.entry("api/minute=x", 1) as ClientKey;
    const now = 1_700_000_000_000;
    k.applyPolicy(allowPolicy(now + 300, 600, now + 60_000), 1, now);
    expect(k.hasPolicy(now + 100)).toBe(true);
    // NTP steps the clock an hour back: before, the ALLOW held for the hour and 300 ms.
    expect(k.hasPolicy(now - 3_600_000)).toBe(false);
    expect(k.hasPolicy(now - 3_600_000 + 100)).toBe(false);
  });
});
