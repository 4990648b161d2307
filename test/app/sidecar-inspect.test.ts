import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import type { RunningServer } from "../../src/app/serve.js";
import { type RunningSidecar, startSidecar } from "../../src/app/sidecar.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { httpGet } from "../../src/testkit/http.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * The sidecar's `/inspect`: why the embedded gateway admits or rejects a key now. Fallback happens
 * here: with its server gone, the key is decided on the gateway's own share, and it says so.
 */
describe("sidecar /inspect", () => {
  let server: RunningServer | undefined;
  let sidecar: RunningSidecar | undefined;
  afterAll(async () => {
    await sidecar?.stop();
    await server?.shutdown();
  });

  it("answers from the owner's word, then names the fallback share once the server is gone", async () => {
    server = await startLoopbackServer(
      writeConfig(
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit: { unit: second, requests_per_unit: 50 }\n",
      ),
    );
    sidecar = await startSidecar({
      listen: "127.0.0.1:0",
      servers: [`127.0.0.1:${server.grpcPort}`],
      clientId: "side-1",
      reportIntervalMs: 50,
      httpPort: 0,
      limits: DEFAULT_INPUT_LIMITS,
      log: pino({ level: "silent" }),
    });
    const url = (q: string) => `http://127.0.0.1:${sidecar!.httpPort}/inspect${q}`;
    const limiter = sidecar.limiter;
    await limiter.whenReady(10_000);
    limiter.decide("api/user=u1");
    await waitFor(
      "a policy from the owner",
      () => limiter.inspect("api/user=u1")?.state !== "allowance",
      10_000,
    );
    const before = await httpGet(url("?key=api/user=u1"));
    expect(before.status).toBe(200);
    // Answered (its policy, or its allowance once an idle key's policy ran out), not in fallback.
    expect(before.body).toMatch(
      /^rule {8}api\/user\S*\nstate {7}(ALLOW|GRANT|allowance)\nwhy {9}(the owner (allows|grants)|no policy in force from the owner)/,
    );

    await server.shutdown();
    server = undefined;
    await waitFor(
      "fallback",
      () => {
        limiter.decide("api/user=u1");
        return limiter.inspect("api/user=u1")?.state === "fallback";
      },
      15_000,
    );
    const after = await httpGet(url("?key=api/user=u1&format=json"));
    expect(JSON.parse(after.body)).toMatchObject({ state: "fallback" });
    expect(JSON.parse(after.body).why).toMatch(
      /^fallback: the owner of \S+ \(50 per 1000 ms\) is unreachable/,
    );
    expect((await httpGet(url("?key=other/x=1"))).status).toBe(404);
    expect((await httpGet(url(""))).status).toBe(400);
  }, 40_000);
});
