import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 60_000,
    // CI reads the counts from the JSON report to print its closing line.
    reporters: process.env.SHARDLIMIT_TEST_JSON ? ["default", "json"] : ["default"],
    outputFile: process.env.SHARDLIMIT_TEST_JSON ? { json: process.env.SHARDLIMIT_TEST_JSON } : undefined,
  },
});
