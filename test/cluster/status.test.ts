import { describe, expect, it } from "vitest";
import { LoadRecordSchema } from "../../src/cluster/load.js";
import { type ClusterStatus, formatStatus } from "../../src/cluster/status.js";

/** `shardlimit status`'s table, with the pools of issue 14 as the owners of their keys publish them. */

const BASE: ClusterStatus = {
  prefix: "/sl/",
  generation: 3,
  slices: 8,
  leader: "a",
  members: [
    {
      id: "a",
      address: "10.0.0.1:7000",
      draining: false,
      registered: true,
      slices: 8,
      keyspace: 1,
      load: 120,
    },
  ],
  imbalance: 1,
  assignmentProblem: undefined,
  pools: [],
};

describe("status with pools", () => {
  it("shows each pool's mode, utilisation against target, level and per-class shed fractions", () => {
    const text = formatStatus({
      ...BASE,
      pools: [
        {
          name: "gpu",
          owner: "a",
          mode: "overloaded",
          target: 0.8,
          utilisation: 0.83,
          level: -0.92,
          fractions: [1, 1, 0.41, 0],
          backends: 10,
          capacity: 1000,
          lending: 0,
        },
      ],
    });
    const lines = text.split("\n");
    expect(lines.at(-2)).toMatch(
      /^pool\s+owner\s+mode\s+utilisation\s+target\s+level\s+shed low\/normal\/high\/critical\s+backends\s+lent\/s$/,
    );
    expect(lines.at(-1)).toMatch(
      /^gpu\s+a\s+overloaded\s+83%\s+80%\s+-0\.92\s+100%\/100%\/41%\/0%\s+10\s+0$/,
    );
  });

  it("prints no pool table when there are none", () => {
    expect(formatStatus(BASE)).not.toContain("pool");
  });

  it("a load record carries pools; a record without them (older servers) still parses", () => {
    const record = { id: "a", generation: 1, at: 5, ranges: [[0, 2 ** 32, 10]] };
    expect(LoadRecordSchema.safeParse(record).success).toBe(true);
    const pool = {
      name: "gpu",
      mode: "idle",
      target: 0.8,
      utilisation: 0.5,
      level: 0.3,
      fractions: [0, 0, 0, 0],
      backends: 2,
      capacity: 100,
      lending: 24,
    };
    expect(LoadRecordSchema.parse({ ...record, pools: [pool] }).pools).toEqual([pool]);
    expect(LoadRecordSchema.safeParse({ ...record, pools: [{ ...pool, mode: "asleep" }] }).success).toBe(
      false,
    );
  });
});
