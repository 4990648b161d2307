import { describe, expect, it } from "vitest";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { EnvoySidecar } from "../../src/sidecar/sidecar.js";
import { entryKey, startGateway } from "../../src/testkit/fake-transport.js";

/** The sidecar gives each descriptor's class to the gateway client and asks the host guard once. */

const req = (values: string[], priority?: string) => ({
  domain: "api",
  descriptors: values.map((value) => ({
    entries: [{ key: "minute", value }, ...(priority ? [{ key: "priority", value: priority }] : [])],
  })),
  hitsAddend: 0,
});

describe("EnvoySidecar: classes and the host guard", () => {
  it("counts a descriptor with a priority entry under its class, as the owner divides the limit by class", async () => {
    const { limiter, run, clock, t } = startGateway();
    run(20);
    const sidecar = new EnvoySidecar(limiter, DEFAULT_INPUT_LIMITS, ["a:1"], clock);
    await sidecar.shouldRateLimit(req(["z"], "high"));
    await sidecar.shouldRateLimit(req(["z"]));
    run(300);
    const reported = t.reports.flatMap((r) => r.req.entries.map((e) => entryKey(t, r.address, e)));
    expect(reported).toContain("api/minute=z/priority=high");
    expect(reported).toContain("api/minute=z");
    limiter.close();
  });

  it("sheds a request of several descriptors by its class's fraction once, not once per descriptor", async () => {
    const load = { value: 0 };
    const { limiter, run, clock } = startGateway({
      opts: {
        hostGuard: { gauges: [{ name: "load", read: () => load.value, threshold: 0.8 }], sampleMs: 100 },
      },
    });
    run(20);
    load.value = 0.95;
    run(600); // six samples over the threshold: low shed whole, half of normal
    expect(["low", "normal", "high"].map((p) => limiter.guard?.shedFraction(p as "low"))).toEqual([
      1, 0.5, 0,
    ]);
    const sidecar = new EnvoySidecar(limiter, DEFAULT_INPUT_LIMITS, ["a:1"], clock);
    const share = async (priority: string) => {
      let ok = 0;
      for (let i = 0; i < 400; i++) {
        const r = await sidecar.shouldRateLimit(req([`${priority}${i}`, `w${i}`, `x${i}`], priority));
        if (r.overallCode === 1) ok++;
      }
      return ok / 400;
    };
    // Asked again per descriptor (as its key's class, normal), a high request was shed 7/8 of the
    // time and a normal one admitted 0.5^4.
    expect(await share("high")).toBe(1);
    const normal = await share("normal");
    expect(normal).toBeGreaterThan(0.42);
    expect(normal).toBeLessThan(0.58);
    expect(await share("low")).toBe(0);
    limiter.close();
  });
});
