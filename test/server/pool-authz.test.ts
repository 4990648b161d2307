import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningServer } from "../../src/app/serve.js";
import { ManualClock } from "../../src/core/clock.js";
import type { RateLimiterRpc } from "../../src/protocol/rpc.js";
import { sha256 } from "../../src/security/identity.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { tokenClient, writeAuth } from "../security/authz-fixtures.js";
import { callError, T0 } from "./harness.js";

/**
 * ReportPool under an auth file (issue 14): the identities `backends:` names report the load of
 * their pools only; anyone else is refused PERMISSION_DENIED naming the method, the pool and the
 * identity, counted in shardlimit_denied_total, and the pool is left as it was.
 */

const CONFIG = `
domain: api
pools:
  gpu: { target: 0.8, idle_below: 0.5 }
  cpu: { target: 0.8, idle_below: 0.5 }
descriptors:
  - key: model
    rate_limit: { unit: second, requests_per_unit: 100, pool: gpu }
  - key: batch
    rate_limit: { unit: second, requests_per_unit: 100, pool: cpu }
`;

const TOKENS = { "gpu-node": "t-gpu", "gw-api": "t-gw", ops: "t-ops" };

async function deniedCount(server: RunningServer, reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  const m = new RegExp(`shardlimit_denied_total\\{method="ReportPool",reason="${reason}"\\} (\\d+)`).exec(
    text,
  );
  return m ? Number(m[1]) : 0;
}

describe("ReportPool under an auth file", () => {
  let server: RunningServer;
  const clock = new ManualClock(T0);
  const rpc: Record<string, RateLimiterRpc> = {};
  const report = (who: string, pool: string, backend = "b1") =>
    rpc[who]!.reportPool({ pool, backend, utilisation: 0.9, capacity: 100 });
  /** Live backends of `pool`, after the controller's next step. */
  const backends = (pool: string) => {
    clock.advance(100);
    return server.limiter.pools.snapshots(clock.now()).find((p) => p.name === pool)!.backends;
  };

  beforeAll(async () => {
    const tokens = Object.entries(TOKENS)
      .map(([name, t]) => `  ${name}: ${sha256(t).toString("hex")}`)
      .join("\n");
    const auth = writeAuth(`tokens:
${tokens}
gateways:
  - {identity: gw-api, domains: [api]}
backends:
  - {identity: gpu-node, pools: [gpu]}
operators:
  - {identity: ops}
`);
    server = await startLoopbackServer(writeConfig(CONFIG), { clock, serve: { authFile: auth } });
    for (const [name, token] of Object.entries(TOKENS)) rpc[name] = tokenClient(server.grpcPort, token);
    rpc.anonymous = tokenClient(server.grpcPort);
  });
  afterAll(async () => {
    for (const r of Object.values(rpc)) r.close();
    await server?.shutdown();
  });

  it("a backend reports its own pool, and may read the cluster view to reach its owner", async () => {
    const res = await report("gpu-node", "gpu");
    expect(res.error).toBeFalsy();
    expect(backends("gpu")).toBe(1);
    expect((await rpc["gpu-node"]!.getClusterView({})).generation).toBeGreaterThanOrEqual(0);
  });

  it("another pool is refused, naming method, pool and identity; counted; the pool unchanged", async () => {
    const n = await deniedCount(server, "pool");
    const err = await callError(report("gpu-node", "cpu"));
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toBe('ReportPool refused for identity "gpu-node" for pool "cpu"');
    expect(await deniedCount(server, "pool")).toBe(n + 1);
    expect(backends("cpu")).toBe(0);
  });

  it("a gateway, or anyone not a backend, is refused whole; an operator may report any pool", async () => {
    const n = await deniedCount(server, "no_grant");
    for (const who of ["gw-api", "anonymous"]) {
      const err = await callError(report(who, "cpu"));
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(err.details).toBe(
        `ReportPool refused for identity "${who}": it is the backend of no pool (backends: in the auth file)`,
      );
    }
    expect(await deniedCount(server, "no_grant")).toBe(n + 2);
    expect(backends("cpu")).toBe(0);
    expect((await report("ops", "cpu", "b9")).error).toBeFalsy();
    expect(backends("cpu")).toBe(1);
  });
});
