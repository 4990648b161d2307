import { defineConfig } from "vitest/config";
import { CHAOS, E2E, INTEGRATION } from "./test/tiers.js";

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
        test: { name: "unit", include: ["test/**/*.test.ts"], exclude: [...E2E, ...INTEGRATION, ...CHAOS] },
      },
      { extends: true, test: { name: "integration", include: INTEGRATION } },
      { extends: true, test: { name: "e2e", include: E2E } },
      // The long chaos scenarios only when asked for (`npm run test:chaos`), one file at a time.
      ...(process.env.SHARDLIMIT_CHAOS === "1"
        ? [{ extends: true as const, test: { name: "chaos", include: CHAOS, fileParallelism: false } }]
        : []),
    ],
  },
});
