import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LOAD_TEST_PACKAGES } from "../../src/cli/bench.js";

const pkg = JSON.parse(readFileSync(path.resolve(import.meta.dirname, "../../package.json"), "utf8")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
};

/** `npm run check:package` installs the packed package to prove it; this keeps the lists in step. */
describe("the published package stays light", () => {
  it("the load-test packages are optional peers (and devDependencies here), never dependencies", () => {
    for (const p of LOAD_TEST_PACKAGES) {
      expect(pkg.dependencies[p], p).toBeUndefined();
      expect(pkg.devDependencies[p], p).toBeDefined();
      expect(pkg.peerDependencies[p], p).toBe(pkg.devDependencies[p]);
      expect(pkg.peerDependenciesMeta[p]?.optional, p).toBe(true);
    }
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual([...LOAD_TEST_PACKAGES].sort());
  });
});
