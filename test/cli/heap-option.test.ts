import type { Option } from "commander";
import { describe, expect, it } from "vitest";
import { DEFAULT_HEAP_GROWING_PERCENT } from "../../src/app/heap.js";
import { serveCommand } from "../../src/cli/serve.js";

/** `serve --heap-growing-percent` (issue 16): 30 by default, from the environment too, bounded. */
describe("serve --heap-growing-percent", () => {
  const option = () => serveCommand().options.find((o: Option) => o.long === "--heap-growing-percent")!;

  it("defaults to the server's factor, from SHARDLIMIT_HEAP_GROWING_PERCENT too", () => {
    expect(option().defaultValue).toBe(DEFAULT_HEAP_GROWING_PERCENT);
    expect(option().envVar).toBe("SHARDLIMIT_HEAP_GROWING_PERCENT");
  });

  it.each(["abc", "-1", "1001", "2.5"])(
    "refuses %s, naming the flag and the range, before anything starts",
    (bad) => {
      const cmd = serveCommand()
        .exitOverride()
        .configureOutput({ writeErr: () => {}, writeOut: () => {} })
        .action(() => {
          throw new Error("must not start");
        });
      expect(() => cmd.parse(["--heap-growing-percent", bad], { from: "user" })).toThrow(
        `--heap-growing-percent must be a whole number from 0 to 1000, got ${JSON.stringify(bad)}`,
      );
    },
  );
});
