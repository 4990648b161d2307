import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import YAML from "yaml";
import {
  applyHeapGrowing,
  DEFAULT_HEAP_GROWING_PERCENT,
  HEAP_OPTIONS,
  heapNote,
  workerNodeFlags,
} from "../../src/app/heap.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";
import { parseDockerfile } from "../deploy/dockerfile.js";

const read = (f: string) => readFileSync(path.join(REPO_ROOT, f), "utf8");

describe("the server's default heap options (issue 16)", () => {
  it("every way of starting the server passes them: the command, the image, the Helm chart", () => {
    const opts = HEAP_OPTIONS.join(" ");
    expect(read("src/cli/main.ts").split("\n")[0]).toBe(`#!/usr/bin/env -S node ${opts}`);
    expect(parseDockerfile(read("Dockerfile")).env.NODE_OPTIONS).toBe(opts);
    const semi = /^--max-semi-space-size=(\d+)$/.exec(HEAP_OPTIONS[0]!);
    expect(semi).not.toBeNull();
    const values = YAML.parse(read("helm/shardlimit/values.yaml")) as {
      memory: { semiSpaceMi: number; heapGrowingPercent: number };
    };
    expect(values.memory.semiSpaceMi).toBe(Number(semi![1]));
    expect(values.memory.heapGrowingPercent).toBe(DEFAULT_HEAP_GROWING_PERCENT);
  });

  it("the start-up log names the semi-space option in force, the command line's over NODE_OPTIONS", () => {
    expect(heapNote(["--max-semi-space-size=64"], "--max-semi-space-size=8")).toMatchObject({
      semiSpace: "--max-semi-space-size=64",
    });
    expect(heapNote([], "--max-old-space-size=900 --max_semi_space_size=16")).toMatchObject({
      semiSpace: "--max_semi_space_size=16",
    });
    const none = heapNote(["--enable-source-maps"], "--max-old-space-size=900");
    expect("warning" in none && none.warning).toContain(HEAP_OPTIONS[0]);
  });

  it("the growing factor is set on V8 only when asked for, and the start-up log says which is in force", () => {
    const set: string[] = [];
    const record = (f: string) => {
      set.push(f);
    };
    applyHeapGrowing(0, true, [], record);
    expect(set).toEqual([]);
    expect(heapNote([]).growingPercent).toBe(0);
    applyHeapGrowing(30, true, [], record);
    expect(set).toEqual(["--heap-growing-percent=30"]);
    expect(heapNote([]).growingPercent).toBe(30);
    applyHeapGrowing(0, true, [], () => {});
  });

  it("the default gives way to a factor on node's own command line; a flag given to serve does not", () => {
    const set: string[] = [];
    const record = (f: string) => {
      set.push(f);
    };
    applyHeapGrowing(30, false, ["--max-semi-space-size=64", "--heap-growing-percent=50"], record);
    expect(set).toEqual([]);
    expect(heapNote([]).growingPercent).toBe(50);
    applyHeapGrowing(30, false, ["--heap_growing_percent", "0"], record);
    expect(set).toEqual([]);
    expect(heapNote([]).growingPercent).toBe(0);
    applyHeapGrowing(30, false, ["--max-semi-space-size=64"], record);
    expect(set).toEqual(["--heap-growing-percent=30"]);
    applyHeapGrowing(20, true, ["--heap-growing-percent=50"], record);
    expect(set).toEqual(["--heap-growing-percent=30", "--heap-growing-percent=20"]);
    expect(heapNote([]).growingPercent).toBe(20);
    applyHeapGrowing(0, true, [], () => {});
  });
});

describe("the V8 thread pool of serve --workers' processes", () => {
  it("is the cores shared out among the workers, at least one thread each", () => {
    expect(workerNodeFlags(2, 2, [], "")).toEqual(["--v8-pool-size=1"]);
    expect(workerNodeFlags(2, 8, [], "")).toEqual(["--v8-pool-size=4"]);
    expect(workerNodeFlags(3, 8, [], "")).toEqual(["--v8-pool-size=2"]);
    expect(workerNodeFlags(16, 8, [], "")).toEqual(["--v8-pool-size=1"]);
  });
  it("leaves one process, and a pool size the operator chose (flag or NODE_OPTIONS), alone", () => {
    expect(workerNodeFlags(1, 2, [], "")).toEqual([]);
    expect(workerNodeFlags(2, 2, ["--v8-pool-size=3"], "")).toEqual([]);
    expect(workerNodeFlags(2, 2, ["--v8-pool-size", "3"], "")).toEqual([]);
    expect(workerNodeFlags(2, 2, [], "--max-semi-space-size=64 --v8_pool_size=2")).toEqual([]);
  });
});
