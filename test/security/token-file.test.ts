import { renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { bearerMetadata, TOKEN_RECHECK_MS, TokenFile } from "../../src/security/token-file.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

const dir = () => tempDir("shardlimit-token-");

describe("token files", () => {
  it("are re-read after a rotation once the recheck interval has passed on the clock", () => {
    const file = path.join(dir(), "token");
    writeFileSync(file, "first-token\n");
    const clock = new ManualClock();
    const t = new TokenFile(file, clock);
    expect(t.token()).toBe("first-token");
    // Rotated the way Kubernetes does it: a new file renamed over the old one.
    const next = `${file}.new`;
    writeFileSync(next, "second-token-longer");
    renameSync(next, file);
    expect(t.token()).toBe("first-token"); // not looked at again yet
    clock.advance(TOKEN_RECHECK_MS);
    expect(t.token()).toBe("second-token-longer");
    expect(bearerMetadata(t)().get("authorization")).toEqual(["Bearer second-token-longer"]);
  });

  it("keep the last good token while the file is empty mid-rotation", () => {
    const file = path.join(dir(), "token");
    writeFileSync(file, "good");
    const clock = new ManualClock();
    const t = new TokenFile(file, clock);
    writeFileSync(file, "");
    clock.advance(TOKEN_RECHECK_MS);
    expect(t.token()).toBe("good");
    writeFileSync(file, "better!");
    clock.advance(TOKEN_RECHECK_MS);
    expect(t.token()).toBe("better!");
  });

  it("refuse at once a missing, empty or multi-word file, naming it", () => {
    const d = dir();
    expect(() => new TokenFile(path.join(d, "none"))).toThrow(/cannot read the token file .*none/);
    writeFileSync(path.join(d, "empty"), "  \n");
    expect(() => new TokenFile(path.join(d, "empty"))).toThrow(/token file .*empty is empty/);
    writeFileSync(path.join(d, "two"), "a b");
    expect(() => new TokenFile(path.join(d, "two"))).toThrow(/more than one word/);
  });
});
