import type { Option } from "commander";
import { describe, expect, it } from "vitest";
import { serveCommand } from "../../src/cli/serve.js";

/** `serve --transport` (issue 16): lean by default, grpc-js on request, anything else refused. */
describe("serve --transport", () => {
  const option = () => serveCommand().options.find((o: Option) => o.long === "--transport")!;

  it("defaults to lean, from SHARDLIMIT_TRANSPORT too, with grpc-js the other choice", () => {
    expect(option().defaultValue).toBe("lean");
    expect(option().envVar).toBe("SHARDLIMIT_TRANSPORT");
    expect(option().argChoices).toEqual(["grpc-js", "lean"]);
  });

  it("refuses an unknown transport, naming the choices, before anything starts", () => {
    let err = "";
    const cmd = serveCommand()
      .exitOverride()
      .configureOutput({ writeErr: (s) => (err += s), writeOut: () => {} })
      .action(() => {
        throw new Error("must not start");
      });
    expect(() => cmd.parse(["--transport", "fast"], { from: "user" })).toThrow(/invalid/);
    expect(err).toContain("Allowed choices are grpc-js, lean");
  });
});
