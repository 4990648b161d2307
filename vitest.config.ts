import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";
import { BENCH, CHAOS, E2E, GRPC_JS_AGAIN, INTEGRATION } from "./test/tiers.js";

/** The long chaos scenarios run only when asked for: `vitest run test/chaos...` or SHARDLIMIT_CHAOS=1. */
const chaos = process.env.SHARDLIMIT_CHAOS === "1" || process.argv.some((a) => a.includes("test/chaos"));
/** The load-test harness end to end (`bench --quick`, `bench sync-compare`), likewise: SHARDLIMIT_BENCH_TESTS=1 or naming a file. */
const bench =
  process.env.SHARDLIMIT_BENCH_TESTS === "1" ||
  process.argv.some((a) => a.includes("test/loadtest/bench") || a.includes("test/loadtest/sync-compare"));

export default defineConfig({
  test: {
    // One test file per core, where vitest's default leaves one core free: most of the suite's
    // time is integration files waiting on the servers and etcd they start, which overlap well
    // (on 2 cores: 559 s for the whole suite against 815-1009 s one file at a time).
    maxWorkers: availableParallelism(),
    testTimeout: 20_000,
    hookTimeout: 60_000,
    // CI reads the counts from the JSON report to print its closing line.
    reporters: process.env.SHARDLIMIT_TEST_JSON ? ["default", "json"] : ["default"],
    outputFile: process.env.SHARDLIMIT_TEST_JSON ? { json: process.env.SHARDLIMIT_TEST_JSON } : undefined,
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: [...E2E, ...INTEGRATION, ...CHAOS, ...BENCH],
        },
      },
      // The in-process server tests once more on the grpc-js transport (the run above is on lean).
      {
        extends: true,
        test: { name: "unit grpc-js", include: GRPC_JS_AGAIN, env: { SHARDLIMIT_TRANSPORT: "grpc-js" } },
      },
      { extends: true, test: { name: "integration", include: INTEGRATION } },
      { extends: true, test: { name: "e2e", include: E2E } },
      ...(bench
        ? [
            {
              extends: true as const,
              // One file at a time: they time the machine.
              test: { name: "bench", include: BENCH, testTimeout: 300_000, fileParallelism: false },
            },
          ]
        : []),
      // One file at a time: each loads the machine, and timing is part of what they judge.
      ...(chaos
        ? [
            {
              extends: true as const,
              test: { name: "chaos", include: CHAOS, fileParallelism: false, testTimeout: 180_000 },
            },
          ]
        : []),
    ],
  },
});
