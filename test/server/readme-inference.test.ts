import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import type { CheckRequest, EnvoyRequest } from "../../src/protocol/messages.js";
import { root } from "../../src/protocol/proto.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";
import { peek, startTestServer, T0, type TestServer } from "./harness.js";

/**
 * The README's "AI inference" section, run as written: its grpcurl request bodies against the
 * sample config, with the outcome the text describes.
 */

const readme = readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("## AI inference"), readme.indexOf("## The gateway client"));
/** The JSON bodies of the section's grpcurl calls, in order (grpcurl's JSON: proto field names). */
const bodies = [...section.matchAll(/-d '([^']*)'/g)].map((m) => JSON.parse(m[1]!.replace(/\\\n/g, "")));

/** grpcurl takes proto field names (`hits_addend`) and enum names; the loaded types are camelCase. */
function camel(json: unknown): unknown {
  if (Array.isArray(json)) return json.map(camel);
  if (typeof json !== "object" || json === null) return json;
  return Object.fromEntries(
    Object.entries(json).map(([k, v]) => [
      k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
      camel(v),
    ]),
  );
}

function fromJson<T>(type: string, json: unknown): T {
  const t = root.lookupType(type);
  return t.toObject(t.fromObject(camel(json) as Record<string, unknown>), { defaults: true }) as T;
}

describe("README: AI inference", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  beforeAll(async () => {
    t = await startTestServer(readFileSync(path.join(REPO_ROOT, "examples/config.yaml"), "utf8"), { clock });
  });
  afterAll(async () => {
    await t.stop();
  });

  it("has the two requests it shows", () => {
    expect(bodies).toHaveLength(2);
  });

  it("ShouldRateLimit: OK with the team's limit; the team's and the customer's counters both charged", async () => {
    const req = fromJson<EnvoyRequest>("envoy.service.ratelimit.v3.RateLimitRequest", bodies[0]);
    const res = await t.rpc.shouldRateLimit(req);
    expect(res.overallCode).toBe(1);
    expect(res.statuses[0]!.currentLimit!.requestsPerUnit).toBe(800_000);
    const now = clock.now();
    expect(peek(t, "inference/group=acme/tenant=research", now)?.remaining).toBe(797_000);
    expect(peek(t, "inference/group=acme", now)?.remaining).toBe(1_997_000);
  });

  it("Check with a priority field: allowed, charged to the chat team and the customer", async () => {
    const req = fromJson<CheckRequest>("shardlimit.v1.CheckRequest", bodies[1]);
    const res = await t.rpc.check(req);
    expect(res.results[0]!.allowed).toBe(true);
    const now = clock.now();
    expect(peek(t, "inference/group=acme/tenant=chat", now)?.remaining).toBe(798_500);
    expect(peek(t, "inference/group=acme", now)?.remaining).toBe(1_995_500);
  });
});
