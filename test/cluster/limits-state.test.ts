import { describe, expect, it } from "vitest";
import { limitsState } from "../../src/cluster/limits-store.js";
import { type ClusterStatus, formatStatus } from "../../src/cluster/status.js";

const version = (n: number) =>
  JSON.stringify({
    version: n,
    digest: `d${n}`,
    at: 1,
    comment: "",
    sources: [{ file: "a.yaml", text: "x" }],
  });

describe("limits in etcd, as read", () => {
  it("finds the head's version, the history in order and the overrides", () => {
    const s = limitsState(
      new Map([
        ["head", JSON.stringify({ version: 2, digest: "d2", at: 1 })],
        ["versions/0000000002", version(2)],
        ["versions/0000000001", version(1)],
        [
          "overrides/api/tenant=a",
          JSON.stringify({ key: "api/tenant=a", requestsPerUnit: 1, unit: "second" }),
        ],
      ]),
    );
    expect(s.current?.version).toBe(2);
    expect(s.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(s.overrides.map((o) => o.key)).toEqual(["api/tenant=a"]);
    expect(s.problems).toEqual([]);
  });

  it("reads a staged version newer than the head, with its files even without the history", () => {
    const head = JSON.stringify({ version: 2, digest: "d2", at: 1 });
    const entries = (staged: number) =>
      new Map([
        ["head", head],
        ["staged", JSON.stringify({ version: staged, digest: `d${staged}`, at: 1 })],
        ["versions/0000000001", version(1)],
        ["versions/0000000002", version(2)],
        ["versions/0000000003", version(3)],
      ]);
    const s = limitsState(entries(3), { history: false });
    expect(s.staged?.record.version).toBe(3);
    expect(s.staged?.version?.version).toBe(3);
    expect(s.versions.map((v) => v.version)).toEqual([2]);
    // A staged record not newer than the head (switched on, the delete not seen yet) waits for nothing.
    expect(limitsState(entries(2)).staged).toBeUndefined();
    const bad = limitsState(new Map([...entries(3), ["staged", "{"]]));
    expect(bad.staged).toBeUndefined();
    expect(bad.problems).toEqual(["staged is malformed"]);
  });

  it("names malformed records and a missing head version, and leaves them out", () => {
    const s = limitsState(
      new Map([
        ["head", JSON.stringify({ version: 3, digest: "d3", at: 1 })],
        ["versions/0000000001", "{"],
        [
          "overrides/api/tenant=a",
          JSON.stringify({ key: "api/tenant=a", requestsPerUnit: -1, unit: "second" }),
        ],
      ]),
    );
    expect(s.current).toBeUndefined();
    expect(s.versions).toEqual([]);
    expect(s.overrides).toEqual([]);
    expect(s.problems).toEqual([
      "versions/0000000001 is malformed",
      "overrides/api/tenant=a is malformed",
      "version 3 (the head) is missing",
    ]);
  });
});

describe("status with limits", () => {
  it("shows each member's limits and a refused version", () => {
    const member = {
      address: "a:1",
      draining: false,
      registered: true,
      slices: 1,
      keyspace: 0.5,
      load: undefined,
    };
    const s: ClusterStatus = {
      prefix: "/p/",
      generation: 1,
      slices: 2,
      leader: "s1",
      imbalance: undefined,
      pools: [],
      assignmentProblem: undefined,
      members: [
        { ...member, id: "s1", limits: { version: 4, digest: "abc" } },
        {
          ...member,
          id: "s2",
          limits: { version: 3, digest: "def", refused: { version: 4, error: "a.yaml: x\nb.yaml: y" } },
        },
        { ...member, id: "s3", limits: { version: 0, digest: "f00" } },
      ],
    };
    const text = formatStatus(s);
    expect(text).toMatch(/s1 .* v4 \(abc\)$/m);
    expect(text).toMatch(/s2 .* v3 \(def\) REFUSED v4$/m);
    expect(text).toMatch(/s3 .* file \(f00\)$/m);
    expect(text).toContain("s2 refused limits version 4: a.yaml: x; b.yaml: y");
  });
});
