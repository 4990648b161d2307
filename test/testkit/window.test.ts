import { describe, expect, it } from "vitest";
import { clearWindowSeconds } from "../../src/testkit/window.js";

describe("clearWindowSeconds", () => {
  it("keeps the hour when the current hour has long enough to run", () => {
    const now = Date.UTC(2026, 11, 2, 16, 50, 0);
    expect(clearWindowSeconds(5 * 60_000, 3600, now)).toBe(3600);
  });

  it("steps off the hour when its end is too near (CI's 16:59 start), to a window that runs long enough", () => {
    const now = Date.UTC(2026, 11, 2, 16, 59, 30);
    const w = clearWindowSeconds(5 * 60_000, 3600, now);
    expect(w).toBeGreaterThan(3600);
    const ms = w * 1000;
    expect(ms - (now % ms)).toBeGreaterThanOrEqual(5 * 60_000);
  });

  it("finds a clear window at every second of an hour", () => {
    const start = Date.UTC(2026, 11, 2, 17, 0, 0);
    for (let s = 0; s < 3600; s++) {
      const now = start + s * 1000 + 123;
      const ms = clearWindowSeconds(10 * 60_000, 3600, now) * 1000;
      expect(ms - (now % ms)).toBeGreaterThanOrEqual(10 * 60_000);
      expect(ms).toBeLessThan(3700 * 1000);
    }
  });

  it("refuses a clear span the window cannot give", () => {
    expect(() => clearWindowSeconds(0)).toThrow(/clearMs/);
    expect(() => clearWindowSeconds(1_800_000, 3600)).toThrow(/clearMs/);
  });
});
