import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { BENCH, CHAOS, E2E, GRPC_JS_AGAIN, INTEGRATION, PROCESS_STARTERS } from "./tiers.js";

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "fixtures" ? [] : testFiles(p);
    return e.name.endsWith(".test.ts") ? [p] : [];
  });
}

describe("test tiers (vitest projects)", () => {
  it("list only files that exist", () => {
    for (const f of [...E2E, ...INTEGRATION, ...CHAOS, ...BENCH, ...GRPC_JS_AGAIN])
      expect(existsSync(f), f).toBe(true);
  });

  it("keep every process-starting test out of the unit tier", () => {
    const listed = new Set([...E2E, ...INTEGRATION, ...CHAOS, ...BENCH]);
    const unit = testFiles("test").filter((f) => !listed.has(f) && f !== "test/tiers.test.ts");
    expect(unit.length).toBeGreaterThan(20);
    const offenders = unit.flatMap((f) => {
      const text = readFileSync(f, "utf8");
      const hit = PROCESS_STARTERS.find((s) => text.includes(s));
      return hit ? [`${f} (${hit})`] : [];
    });
    expect(offenders, "list these in test/tiers.ts as integration or e2e").toEqual([]);
  });

  it("run every unit test with in-process servers on the grpc-js transport too", () => {
    const listed = new Set([...E2E, ...INTEGRATION, ...CHAOS, ...BENCH]);
    const again = new Set(GRPC_JS_AGAIN);
    for (const f of GRPC_JS_AGAIN) expect(listed.has(f), `${f} is not a unit test`).toBe(false);
    const missing = testFiles("test").filter((f) => {
      if (listed.has(f) || again.has(f) || f === "test/server/lean.test.ts") return false;
      return /testkit\/in-process\.js|\/harness\.js|\/two-servers\.js/.test(readFileSync(f, "utf8"));
    });
    expect(missing, "add these to GRPC_JS_AGAIN in test/tiers.ts").toEqual([]);
  });
});
