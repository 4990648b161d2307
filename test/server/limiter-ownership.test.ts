import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import type { Ownership, OwnershipVerdict, Placed } from "../../src/server/ownership.js";
import { StandaloneOwnership } from "../../src/server/ownership.js";
import { API_CONFIG } from "./api-config.js";

/**
 * The Limiter asks its ownership about every report entry and Check item, with the key's point
 * kept per key (a hash costs more than the counting): the point it passes must be the key's own,
 * for keys sent by string and by handle, or a cluster member would serve or refuse the wrong keys.
 */
class RecordingOwnership implements Ownership {
  private readonly standalone: StandaloneOwnership;
  asked: [string, number | undefined][] = [];
  refuse = new Set<string>();
  constructor(clock: ManualClock) {
    this.standalone = new StandaloneOwnership("self:1", clock);
  }
  check(shardKey: string, placed?: Placed): OwnershipVerdict {
    // As a cluster member does: the point from the caller's keeping, or hashed and kept there.
    if (placed !== undefined) {
      placed.point ??= keyPoint(shardKey);
      this.asked.push([shardKey, placed.point]);
    } else this.asked.push([shardKey, undefined]);
    return this.refuse.has(shardKey) ? "not_owner" : "own";
  }
  generation() {
    return this.standalone.generation();
  }
  ownerOf() {
    return this.standalone.ownerOf();
  }
  changed(ms: number) {
    return this.standalone.changed(ms);
  }
  view() {
    return this.standalone.view();
  }
}

describe("the Limiter's ownership checks", () => {
  it("pass each key's own point, by string, by handle and in Check, and honour the verdict", () => {
    const clock = new ManualClock(1_700_000_000_000);
    const ownership = new RecordingOwnership(clock);
    const limiter = new Limiter({
      engine: new Engine(),
      clock,
      config: compileSources([{ file: "c.yaml", text: API_CONFIG }]),
      ownership,
      limits: DEFAULT_INPUT_LIMITS,
      metrics: noopMetrics,
    });
    const keys = ["api/fw=a", "api/tb=a", "api/sw=a"];
    ownership.refuse.add("api/sw=a");
    const entry = (key: string) => ({ key, admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 });
    const first = limiter.reportAndGetPolicy({
      clientId: "gw",
      seq: 1,
      intervalMs: 100,
      entries: keys.map(entry),
    } as never);
    expect(first.policies[2]!.error?.code).toBe(ErrorCode.NOT_OWNER);
    const handles = first.policies.map((p) => p.keyHandle!);
    expect(handles.slice(0, 2).every((h) => h > 0)).toBe(true);
    clock.advance(100);
    limiter.reportAndGetPolicy({
      clientId: "gw",
      seq: 2,
      intervalMs: 100,
      keyEpoch: first.keyEpoch,
      entries: handles.slice(0, 2).map((keyHandle) => ({ ...entry(""), keyHandle })),
    } as never);
    limiter.check({ items: keys.map((key) => ({ key, cost: 1 })) } as never);
    expect(ownership.asked.length).toBe(keys.length + 2 + keys.length);
    for (const [shardKey, point] of ownership.asked) expect(point, shardKey).toBe(keyPoint(shardKey));
    expect(new Set(ownership.asked.map(([k]) => k))).toEqual(new Set(keys));
  });
});
