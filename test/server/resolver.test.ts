import { describe, expect, it } from "vitest";
import { compileSources } from "../../src/config/load.js";
import { KeyResolver } from "../../src/server/resolver.js";

const config = compileSources([
  {
    file: "t.yaml",
    text: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 5 }\n",
  },
]);

describe("KeyResolver", () => {
  it("gives each key one entry and one handle, and finds it by handle in its epoch only", () => {
    const r = new KeyResolver(config, 10);
    const a = r.lookup("d/k=a");
    expect(r.lookup("d/k=a")).toBe(a);
    const b = r.lookup("d/k=b");
    expect(b.handle).not.toBe(a.handle);
    expect(r.byHandle(r.epoch, a.handle)).toBe(a);
    expect(r.byHandle(r.epoch + 1, a.handle)).toBeUndefined();
    expect(r.byHandle(r.epoch, 0)).toBeUndefined();
    expect(r.byHandle(r.epoch, 99)).toBeUndefined();
    expect(typeof r.lookup("nodomain").resolved).toBe("string");
    expect(r.lookup("d/other=x").resolved).toBeUndefined();
  });

  it("when full, starts over under a new epoch so no old handle is misread", () => {
    const r = new KeyResolver(config, 3);
    const first = r.epoch;
    const a = r.lookup("d/k=a");
    r.lookup("d/k=b");
    r.lookup("d/k=c");
    const d = r.lookup("d/k=d"); // table full: cleared
    expect(r.epoch).not.toBe(first);
    expect(d.handle).toBe(1);
    expect(r.byHandle(first, a.handle)).toBeUndefined();
    expect(r.byHandle(r.epoch, 1)?.key).toBe("d/k=d");
  });

  it("keeps no entry for a malformed key, so junk cannot crowd out real keys or force a new epoch", () => {
    const r = new KeyResolver(config, 3);
    const first = r.epoch;
    const a = r.lookup("d/k=a");
    for (let i = 0; i < 10; i++) expect(typeof r.lookup(`junk-${i}`).resolved).toBe("string");
    expect(r.epoch).toBe(first);
    expect(r.byHandle(first, a.handle)).toBe(a);
    expect(r.lookup("junk-0").handle).toBe(0);
  });

  it("is bounded in characters as well as entries: long keys start it over sooner", () => {
    const r = new KeyResolver(config, 1000, 20);
    const first = r.epoch;
    r.lookup("d/k=aaaaaaaa"); // 12 characters
    expect(r.epoch).toBe(first);
    const b = r.lookup("d/k=bbbbbbbb"); // 24 in all: over 20, starts over
    expect(r.epoch).not.toBe(first);
    expect(b.handle).toBe(1);
  });
});
