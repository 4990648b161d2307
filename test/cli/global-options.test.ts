import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { globalTierFlags, globalTierSettings } from "../../src/cli/global-options.js";
import { OptionsError } from "../../src/core/errors.js";

/** serve's --global-tier, --region and the rest: parsed once, errors naming the flag. */

function parse(argv: string[]) {
  const c = new Command("serve").exitOverride().configureOutput({ writeErr: () => {} });
  for (const f of Object.values(globalTierFlags)) c.addOption(f());
  c.parse(argv, { from: "user" });
  return c.opts();
}

describe("global tier flags", () => {
  it("reads the global tier's servers, the region and the defaults", () => {
    const s = globalTierSettings(
      parse(["--global-tier", "10.0.0.1:8081, 10.0.0.2:8081", "--region", "eu-west"]) as never,
    );
    expect(s).toEqual({
      servers: ["10.0.0.1:8081", "10.0.0.2:8081"],
      region: "eu-west",
      fallbackAfterMs: 30_000,
      regions: 1,
      reportIntervalMs: 100,
    });
  });

  it("without --global-tier there is no global tier", () => {
    expect(globalTierSettings(parse([]) as never)).toBeUndefined();
  });

  it("--global-tier needs --region, and --region needs --global-tier", () => {
    expect(() => globalTierSettings(parse(["--global-tier", "g:1"]) as never)).toThrow(
      new OptionsError("--global-tier needs --region: this region's name at the global tier"),
    );
    expect(() => globalTierSettings(parse(["--region", "eu"]) as never)).toThrow(
      /--region has no effect without --global-tier/,
    );
  });

  it("refuses bad values, naming the flag", () => {
    expect(() => parse(["--global-tier", "nohost"])).toThrow(/--global-tier must be host:port/);
    expect(() => parse(["--region", "eu west"])).toThrow(/--region must be 1-128 letters/);
    expect(() => parse(["--global-regions", "0"])).toThrow(/--global-regions/);
    expect(() => parse(["--global-fallback-after", "-5"])).toThrow(/--global-fallback-after/);
  });

  it("--global-tier-ca and --global-tier-server-name: read, and refused where they cannot work", () => {
    const base = ["--global-tier", "g:1", "--region", "eu"];
    expect(
      globalTierSettings(
        parse([
          ...base,
          "--global-tier-ca",
          "/ca.pem",
          "--global-tier-server-name",
          "global.example",
        ]) as never,
      ),
    ).toMatchObject({ ca: "/ca.pem", serverName: "global.example" });
    // The server's own TLS (--tls-cert) is enough for a server name.
    expect(
      globalTierSettings(parse([...base, "--global-tier-server-name", "global.example"]) as never, true),
    ).toMatchObject({ serverName: "global.example" });
    expect(() =>
      globalTierSettings(parse([...base, "--global-tier-server-name", "global.example"]) as never),
    ).toThrow(/--global-tier-server-name needs TLS towards the global tier/);
    expect(() => globalTierSettings(parse(["--global-tier-ca", "/ca.pem"]) as never)).toThrow(
      new OptionsError("--global-tier-ca needs --global-tier (where the global tier is)"),
    );
  });
});
