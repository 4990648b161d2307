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

describe("status with global limits", () => {
  const key = (i: number, mode: "connected" | "last_share" | "fallback" = "connected") => ({
    key: `api/k=${i}`,
    sharePerS: 100 + i,
    lastSharePerS: 99 + i,
    demandPerS: i,
    mode,
    lastContactAgoMs: 1500,
  });

  it("shows each member's link, the most demanded keys (20 at most) with region, share, age and mode, and counts the rest", () => {
    const text = formatStatus({
      ...BASE,
      global: [
        {
          owner: "a",
          region: "eu",
          link: "connected",
          keys: Array.from({ length: 15 }, (_, i) => key(i * 2)),
          more: 3,
          modes: { connected: 18, last_share: 0, fallback: 0 },
        },
        {
          owner: "b",
          region: "eu",
          link: "refused",
          linkError: '7 PERMISSION_DENIED: ReportAndGetPolicy refused for identity "anonymous"',
          keys: [...Array.from({ length: 9 }, (_, i) => key(i * 2 + 1, "last_share")), key(100, "fallback")],
          more: 0,
          modes: { connected: 0, last_share: 9, fallback: 1 },
        },
      ],
    });
    const lines = text.split("\n");
    expect(lines).toContain("global tier link of a (region eu): connected");
    expect(lines).toContain(
      'global tier link of b (region eu): refused: 7 PERMISSION_DENIED: ReportAndGetPolicy refused for identity "anonymous"',
    );
    const head = lines.findIndex((l) => l.startsWith("global key"));
    expect(lines[head]).toMatch(
      /^global key\s+owner\s+region\s+share\/s\s+last share\/s\s+demand\/s\s+last share age\s+mode$/,
    );
    const rows = lines.slice(head + 1, -1);
    expect(rows).toHaveLength(20);
    expect(rows[0]).toMatch(
      /^api\/k=100\s+b\s+eu\s+200\.0\s+199\.0\s+100\.0\s+1\.5s\s+fallback \(limit \/ regions\)$/,
    );
    expect(rows[1]).toMatch(/^api\/k=28\s+a\s+eu\s+128\.0\s+127\.0\s+28\.0\s+1\.5s\s+connected$/);
    expect(rows[7]).toMatch(/^api\/k=17\s+b\s+eu\s+117\.0\s+116\.0\s+17\.0\s+1\.5s\s+last_share$/);
    // 25 published, 20 shown; 3 more the members did not publish one by one.
    expect(lines.at(-1)).toBe("global keys: 28 (connected 18, last share 9, fallback 1); 8 more not listed");
  });

  it("prints nothing of the global tier without it", () => {
    expect(formatStatus({ ...BASE, global: [] })).not.toContain("global");
  });

  it("a load record carries the global status; a bad one is refused", () => {
    const record = {
      id: "a",
      generation: 1,
      at: 1,
      ranges: [],
      global: {
        region: "eu",
        link: "connecting",
        keys: [key(1)],
        more: 0,
        modes: { connected: 1, last_share: 0, fallback: 0 },
      },
    };
    expect(LoadRecordSchema.safeParse(record).success).toBe(true);
    expect(LoadRecordSchema.safeParse({ ...record, global: { ...record.global, link: "up" } }).success).toBe(
      false,
    );
  });
});
