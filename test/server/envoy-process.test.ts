import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EnvoyDescriptor, EnvoyResponse } from "../../src/protocol/messages.js";
import { connect } from "../../src/protocol/rpc.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { type ServerProcess, serverProcess } from "../../src/testkit/serve.js";
import { removeTempDirs, tempDir } from "../../src/testkit/temp-dir.js";
import { desc, startCli } from "./harness.js";

/**
 * envoyproxy/ratelimit's response headers, quota mode, dynamic metadata, global shadow mode and
 * merged domains through a real `shardlimit serve` process over a real gRPC connection, started
 * with the flags (and, for the second, the SHARDLIMIT_* environment variables), answering as
 * envoyproxy/ratelimit answers with the same settings (LIMIT_RESPONSE_HEADERS_ENABLED and its
 * header names, RESPONSE_DYNAMIC_METADATA, SHADOW_MODE, MERGE_DOMAIN_CONFIG).
 */

// The JSON form of the decoded message names enum values.
const OK = "OK" as unknown as number;
const OVER = "OVER_LIMIT" as unknown as number;

const CONFIG = `
domain: edge
descriptors:
  - key: client
    rate_limit: { unit: minute, requests_per_unit: 3 }
  - key: quota_a
    quota_mode: true
    metadata: { plan: { name: bronze } }
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: quota_b
    quota_mode: true
    metadata: { plan: { name: silver, tier: 2 } }
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: path
    value: /api/*/items*
    rate_limit: { unit: minute, requests_per_unit: 1 }
`;

const envoyDir = () => tempDir("shardlimit-envoy-");

beforeAll(() => {
  ensureBuilt();
}, 120_000);

afterAll(async () => {
  await killAllCli();
  removeTempDirs();
});

async function rls(address: string, descriptors: EnvoyDescriptor[]): Promise<EnvoyResponse> {
  const rpc = connect(address);
  try {
    // Decoded as Envoy decodes it: a plain copy of the wire message.
    return JSON.parse(
      JSON.stringify(await rpc.shouldRateLimit({ domain: "edge", descriptors, hitsAddend: 0 })),
    );
  } finally {
    rpc.close();
  }
}

/** envoyproxy/ratelimit's reset header: seconds to the end of the unit, counted from the epoch. */
function resetNow(unitSeconds: number): number {
  return unitSeconds - (Math.floor(Date.now() / 1000) % unitSeconds);
}

describe("ShouldRateLimit with envoyproxy/ratelimit's options, from a real server process", () => {
  let server: ServerProcess;

  beforeAll(async () => {
    const config = path.join(envoyDir(), "config.yaml");
    writeFileSync(config, CONFIG);
    server = await serverProcess({
      id: "envoy-options",
      configPath: config,
      cli: "built",
      extraArgs: [
        "--response-headers",
        "--header-ratelimit-limit",
        "X-RateLimit-Limit",
        "--header-ratelimit-remaining",
        "X-RateLimit-Remaining",
        "--header-ratelimit-reset",
        "X-RateLimit-Reset",
        "--response-dynamic-metadata",
      ],
      readyTimeoutMs: 60_000,
    });
    await server.start();
  }, 90_000);

  afterAll(async () => {
    await server?.stop();
  });

  it("adds X-RateLimit-* headers for the descriptor closest to its limit, then the one over it", async () => {
    const first = await rls(server.address, [desc("client=c1")]);
    expect(first.overallCode).toBe(OK);
    const [limit, remaining, reset] = first.responseHeadersToAdd!;
    expect(limit).toEqual({ key: "X-RateLimit-Limit", value: "3" });
    expect(remaining).toEqual({ key: "X-RateLimit-Remaining", value: "2" });
    expect(reset!.key).toBe("X-RateLimit-Reset");
    const before = resetNow(60);
    expect(Number(reset!.value)).toBeGreaterThanOrEqual(Math.max(1, before - 2));
    expect(Number(reset!.value)).toBeLessThanOrEqual(60);

    await rls(server.address, [desc("client=c1")]);
    await rls(server.address, [desc("client=c1")]);
    const over = await rls(server.address, [desc("client=c2"), desc("client=c1")]);
    expect(over.overallCode).toBe(OVER);
    expect(over.responseHeadersToAdd!.slice(0, 2).map((h) => h.value)).toEqual(["3", "0"]);
  });

  it("quota mode: one quota limit over leaves the request OK, all of them over reject it", async () => {
    const a = await rls(server.address, [desc("quota_a=t1"), desc("quota_b=t1")]);
    expect(a.overallCode).toBe(OK);
    // quota_a is now over; quota_b=t2 is fresh: not every quota limit is over.
    const b = await rls(server.address, [desc("quota_a=t1"), desc("quota_b=t2")]);
    expect([b.overallCode, ...b.statuses.map((s) => s.code)]).toEqual([OK, OVER, OK]);
    const meta = b.dynamicMetadata as { fields: Record<string, unknown> };
    // Only the passing limit's metadata (quota_b's), as envoyproxy/ratelimit returns it.
    expect(meta.fields.metadata).toEqual({
      structValue: {
        fields: {
          plan: { structValue: { fields: { name: { stringValue: "silver" }, tier: { numberValue: 2 } } } },
        },
      },
    });
    expect(meta.fields.domain).toEqual({ stringValue: "edge" });
    const c = await rls(server.address, [desc("quota_a=t1"), desc("quota_b=t2")]);
    expect([c.overallCode, ...c.statuses.map((s) => s.code)]).toEqual([OVER, OVER, OVER]);
  });

  it("matches a value against wildcards in the middle", async () => {
    const first = await rls(server.address, [desc("path=/api/v1/items/7")]);
    expect(first.statuses[0]?.currentLimit?.requestsPerUnit).toBe(1);
    const again = await rls(server.address, [desc("path=/api/v1/items/7")]);
    expect(again.overallCode).toBe(OVER);
    const other = await rls(server.address, [desc("path=/api/v1/users")]);
    expect(other.statuses[0]?.currentLimit).toBeUndefined();
  });
});

describe("global shadow mode and merged domains, from SHARDLIMIT_* environment variables", () => {
  it("merges a domain split across two files and answers OK when over", async () => {
    const dir = envoyDir();
    writeFileSync(
      path.join(dir, "a.yaml"),
      "domain: edge\ndescriptors:\n  - key: client\n    rate_limit: { unit: minute, requests_per_unit: 1 }\n",
    );
    writeFileSync(
      path.join(dir, "b.yaml"),
      "domain: edge\ndescriptors:\n  - key: tenant\n    rate_limit: { unit: minute, requests_per_unit: 1 }\n",
    );
    const p = startCli(
      [
        "serve",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--grpc-host",
        "127.0.0.1",
        "--http-host",
        "127.0.0.1",
      ],
      {
        SHARDLIMIT_CONFIG: dir,
        SHARDLIMIT_MERGE_DOMAINS: "true",
        SHARDLIMIT_SHADOW_MODE: "true",
      },
    );
    try {
      const { log } = await p.waitForLog('"shardlimit serving"', (l) => l.msg === "shardlimit serving", {
        timeoutMs: 60_000,
      });
      const address = `127.0.0.1:${log.grpcPort as number}`;
      await rls(address, [desc("client=c"), desc("tenant=t")]);
      const r = await rls(address, [desc("client=c"), desc("tenant=t")]);
      // Both limits come from the two files; both are over, and shadow mode answers OK.
      expect([r.overallCode, ...r.statuses.map((s) => s.code)]).toEqual([OK, OVER, OVER]);
    } finally {
      await p.stop("SIGTERM");
    }
  }, 90_000);
});
