import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureBuilt } from "../../src/testkit/cli.js";
import { startCli } from "../server/harness.js";
import { startTwoServers, type TwoServers } from "../server/two-servers.js";

/**
 * `shardlimit inspect` as a user runs it (the built CLI), against two in-process servers: asked of
 * the server that does not own the key, it follows to the owner and prints why it rejects.
 */
describe("shardlimit inspect", () => {
  let two: TwoServers;
  beforeAll(async () => {
    ensureBuilt();
    two = await startTwoServers();
  }, 120_000);
  afterAll(() => two?.stop());

  const run = async (args: string[]) => {
    const p = startCli(["inspect", ...args]);
    const { code } = await p.exited;
    return { code, out: p.lines.join("\n"), err: p.stderr() };
  };

  it("follows a non-owner to the owner and prints the rule, counter and last rejection", async () => {
    await two.rpc.check({ items: [{ key: "d/k=9", cost: 3 }] });
    const r = await run(["d/k=9", "--target", `127.0.0.1:${two.a.port}`]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain(`does not own d/k=9: asking its owner ${two.bAddress}`);
    expect(r.out).toContain(`owner       this server (b at ${two.bAddress}), generation 1`);
    expect(r.out).toContain("rule        d/k#k_rpm: 2 per 60000 ms, fixed_window");
    expect(r.out).toMatch(
      /over limit: d\/k#k_rpm \(2 per 60 s, fixed_window\) had 2 left, the request asked 3/,
    );
    const json = await run(["d/k=9", "--target", two.bAddress, "--json"]);
    expect(JSON.parse(json.out).counters[0].rejections[0].kind).toBe("over_limit");
  }, 60_000);

  it("a malformed key fails with the server's reason; a bad --target is refused naming the flag", async () => {
    const bad = await run(["not-a-key", "--target", two.bAddress]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^shardlimit inspect: inspect: /);
    const flag = await run(["d/k=1", "--target", "nowhere"]);
    expect(flag.code).not.toBe(0);
    expect(flag.err).toContain("--target");
  }, 60_000);
});
