import { describe, expect, it } from "vitest";
import { parseYaml } from "../../src/config/yaml-read.js";

/** The one-pass duplicate-key check that replaces the YAML library's pairwise one. */

describe("parseYaml: keys written twice", () => {
  it("are reported in any map, nested or flow, with the line of the second", () => {
    const text = ["domain: api", "weights:", "  a: 1", "  b: 2", "  a: 3", "flow: { x: 1, x: 2 }", ""].join(
      "\n",
    );
    const { problems } = parseYaml("f.yaml", text);
    expect(problems.map((p) => [p.line, p.message])).toEqual([
      [5, "invalid YAML: Map keys must be unique"],
      [6, "invalid YAML: Map keys must be unique"],
    ]);
  });

  it("allow merge keys more than once and the same key in different maps", () => {
    const text = [
      "base: &b { x: 1 }",
      "more: &m { y: 1 }",
      "c:",
      "  <<: *b",
      "  <<: *m",
      "d: { x: 2 }",
      "",
    ].join("\n");
    expect(parseYaml("f.yaml", text).problems).toEqual([]);
  });
});
