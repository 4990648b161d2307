import { describe, expect, it } from "vitest";
import { warmUpHandoff } from "../../src/cluster/warm-up.js";

describe("warming up the handoff path at start", () => {
  it("takes, encodes, decodes and puts every synthetic counter of every algorithm", async () => {
    const w = await warmUpHandoff();
    // 3 rounds x 3 algorithms x 1,000 counters: none dropped on the way (each was worth sending).
    expect(w.counters).toBe(9000);
  });
});
