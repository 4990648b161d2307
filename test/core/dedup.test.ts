import { describe, expect, it } from "vitest";
import { ClientsExhaustedError } from "../../src/core/dedup.js";
import { ReportDedup } from "../../src/core/index.js";

describe("report dedup", () => {
  it("applies each sequence number once, in or out of order", () => {
    const d = new ReportDedup();
    expect(d.accept("c", 1, 0)).toBe("new");
    expect(d.accept("c", 3, 0)).toBe("new");
    expect(d.accept("c", 1, 0)).toBe("duplicate");
    expect(d.accept("c", 2, 0)).toBe("new");
    expect(d.accept("c", 2, 0)).toBe("duplicate");
    expect(d.accept("other", 2, 0)).toBe("new");
  });

  it("refuses to guess about reports older than its window", () => {
    const d = new ReportDedup();
    d.accept("c", 100, 0);
    expect(d.verdict("c", 69)).toBe("new");
    expect(d.verdict("c", 68)).toBe("too_old");
    expect(d.accept("c", 40, 0)).toBe("too_old");
    d.accept("c", 200, 0); // a jump clears the window
    expect(d.accept("c", 199, 0)).toBe("new");
    expect(d.accept("c", 200, 0)).toBe("duplicate");
  });

  it("forgets idle clients", () => {
    const d = new ReportDedup();
    d.accept("a", 1, 10);
    d.accept("b", 1, 20);
    expect(d.sweep(15)).toBe(1);
    expect(d.accept("a", 1, 30)).toBe("new");
    expect(d.accept("b", 1, 30)).toBe("duplicate");
  });

  it("remembers at most maxClients client ids: a new one past it is refused, known ones go on", () => {
    const d = new ReportDedup(3);
    for (const id of ["a", "b", "c"]) expect(d.accept(id, 1, 0)).toBe("new");
    expect(() => d.accept("d", 1, 0)).toThrow(ClientsExhaustedError);
    expect(() => d.accept("d", 1, 0)).toThrow(/maximum of 3 reporting client ids/);
    expect(d.size).toBe(3);
    expect(d.accept("a", 2, 0)).toBe("new");
    // Once idle ones are forgotten there is room again.
    d.sweep(1);
    expect(d.accept("d", 1, 5)).toBe("new");
  });

  it("a report forgotten (it applied nothing) is new when sent again; others stay", () => {
    const d = new ReportDedup();
    for (const seq of [5, 6, 7]) expect(d.accept("a", seq, 0)).toBe("new");
    d.forget("a", 6);
    d.forget("a", 100); // past max: nothing to forget
    d.forget("b", 1); // unknown client
    expect(d.accept("a", 6, 1)).toBe("new");
    expect(d.accept("a", 6, 1)).toBe("duplicate");
    expect(d.accept("a", 5, 1)).toBe("duplicate");
    expect(d.accept("a", 7, 1)).toBe("duplicate");
  });
});
