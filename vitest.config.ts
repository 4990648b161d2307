import { defineConfig } from "vitest/config";

/**
 * Tests in three tiers, each a vitest project (`npm test` runs all three; `npm run test:unit` and
 * so on, one). A file is in the tier of the heaviest thing it does:
 * - e2e: the whole CLI as a user runs it, with every process (`shardlimit bench --quick` renders
 *   its report in Chromium; the packed package installed in an empty project).
 * - integration: starts real processes: etcd, `shardlimit serve` / `assigner` / `sidecar`,
 *   redis-server.
 * - unit: everything else: in memory, or in-process servers on loopback ports; seconds in all.
 * The lists name files, so a new test is unit until it is listed here.
 */
const E2E = ["test/loadtest/bench.test.ts", "test/package.test.ts"];
const INTEGRATION = [
  "test/client/cluster-client.test.ts",
  "test/client/grpc.test.ts",
  "test/cluster/assigner.test.ts",
  "test/cluster/cluster.test.ts",
  "test/cluster/leadership.test.ts",
  "test/cluster/membership.test.ts",
  "test/cluster/prefix-view.test.ts",
  "test/cluster/rebalance-live.test.ts",
  "test/loadtest/load.test.ts",
  "test/server/process.test.ts",
  "test/testkit/etcd.test.ts",
];

export default defineConfig({
  test: {
    testTimeout: 20_000,
    hookTimeout: 60_000,
    // CI reads the counts from the JSON report to print its closing line.
    reporters: process.env.SHARDLIMIT_TEST_JSON ? ["default", "json"] : ["default"],
    outputFile: process.env.SHARDLIMIT_TEST_JSON ? { json: process.env.SHARDLIMIT_TEST_JSON } : undefined,
    projects: [
      {
        extends: true,
        test: { name: "unit", include: ["test/**/*.test.ts"], exclude: [...E2E, ...INTEGRATION] },
      },
      { extends: true, test: { name: "integration", include: INTEGRATION } },
      { extends: true, test: { name: "e2e", include: E2E } },
    ],
  },
});
