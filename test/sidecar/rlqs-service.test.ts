import { writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningServer } from "../../src/app/serve.js";
import { RLQS_SERVICE, serviceDefinition } from "../../src/protocol/proto.js";
import { connect } from "../../src/protocol/rpc.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { EnvoyRlqsClient } from "../../src/testkit/rlqs-client.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * RLQS on one in-process server: Envoy's own protos over a real gRPC stream, from a client that
 * behaves as Envoy's filter. The cluster-wide accuracy is test/sidecar/rlqs-cluster.test.ts.
 */

const LIMITS = `
domain: api
descriptors:
  - key: tenant
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 200, burst: 20 }
`;
const RLQS = `
rlqs:
  mappings:
    - domain: envoy
      match: { name: api }
      limit_domain: api
      descriptors:
        - { key: tenant, bucket_key: tenant }
  unmatched: deny_all
  report_interval: 50ms
  max_buckets_per_stream: 3
  max_streams: 5
  abandon_after: 1s
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("RLQS on one server", () => {
  let server: RunningServer;
  let address: string;
  const clients: EnvoyRlqsClient[] = [];
  const open = (o: Partial<ConstructorParameters<typeof EnvoyRlqsClient>[0]> = {}) => {
    const c = new EnvoyRlqsClient({ address, domain: "envoy", reportIntervalMs: 50, ...o });
    clients.push(c);
    return c;
  };
  beforeAll(async () => {
    const dir = tempDir("shardlimit-rlqs-");
    writeFileSync(path.join(dir, "rlqs.yaml"), RLQS);
    server = await startLoopbackServer(writeConfig(LIMITS, dir), {
      rlqsConfigPath: path.join(dir, "rlqs.yaml"),
    });
    address = `127.0.0.1:${server.grpcPort}`;
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await server?.shutdown();
  });

  it("a bucket over its limit gets token buckets; what is admitted is the limit", async () => {
    const c = open();
    const bucket = { name: "api", tenant: "acme" };
    const t0 = performance.now();
    let admitted = 0;
    // 1000/s offered against 200/s, for 1.5 s.
    while (performance.now() - t0 < 1500) {
      for (let i = 0; i < 5; i++) if (c.request(bucket)) admitted++;
      await sleep(5);
    }
    const seconds = (performance.now() - t0) / 1000;
    expect(c.assignments).toBeGreaterThan(5);
    // The burst (20) and the first requests before any assignment aside, 200/s.
    expect(admitted).toBeGreaterThan(200 * seconds * 0.8);
    expect(admitted).toBeLessThan(200 * seconds * 1.2 + 60);
  });

  it("a bucket no mapping takes gets the `unmatched` blanket rule (deny_all here)", async () => {
    const c = open();
    c.request({ name: "other" });
    await waitFor("an assignment", () => c.assignments > 0, 5000);
    expect(c.request({ name: "other" })).toBe(false);
  });

  it("refuses a first report without a domain, naming it, and ends only that stream", async () => {
    const c = open({ domain: "" });
    c.request({ name: "api", tenant: "x" });
    const status = await c.ended;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toMatch(/domain is empty/);
  });

  /**
   * A stream driven by hand (Envoy-like behaviour aside): its actions, its status, and `report`,
   * one report of `allowed` per bucket id.
   */
  function rawStream() {
    const Client = grpc.makeClientConstructor(serviceDefinition(RLQS_SERVICE), RLQS_SERVICE);
    const raw = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client &
      Record<string, () => grpc.ClientDuplexStream<object, { bucketAction: object[] }>>;
    const stream = raw.StreamRateLimitQuotas!.call(raw);
    const actions: object[] = [];
    const status = new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
    stream.on("data", (m) => actions.push(...m.bucketAction));
    stream.on("error", () => {});
    const timeElapsed = { seconds: 0, nanos: 100_000_000 };
    const report = (usages: [Record<string, string>, number][]) =>
      stream.write({
        domain: "envoy",
        bucketQuotaUsages: usages.map(([bucket, allowed]) => ({
          bucketId: { bucket },
          timeElapsed,
          numRequestsAllowed: allowed,
        })),
      });
    return { raw, stream, actions, status, report };
  }

  it("abandons a bucket its stream stopped reporting (abandon_after)", async () => {
    const { raw, stream, actions, report } = rawStream();
    report([[{ name: "api", tenant: "quiet" }, 1]]);
    await waitFor(
      "an abandon action",
      () => actions.some((a) => "abandonAction" in a && a.abandonAction),
      5000,
    );
    expect(actions.at(-1)).toMatchObject({
      bucketId: { bucket: { name: "api", tenant: "quiet" } },
      abandonAction: {},
    });
    stream.end();
    raw.close();
  });

  it("a report with one bad usage ends the stream naming it, and counts none of its usages", async () => {
    const { raw, status, report } = rawStream();
    report([
      [{ name: "api", tenant: "untouched" }, 50],
      [{}, 1],
    ]);
    const s = await status;
    raw.close();
    expect(s.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(s.details).toBe("bucket_quota_usages[1].bucket_id has no entries");
    // The valid usage beside it was not charged: the bucket (20) is full less this one request.
    const rpc = connect(address);
    const r = await rpc.check({ items: [{ key: "api/tenant=untouched", cost: 1 }] }, { deadlineMs: 3000 });
    rpc.close();
    expect(r.results[0]).toMatchObject({ allowed: true, remaining: 19 });
  });

  it("ends a stream that passes max_buckets_per_stream with RESOURCE_EXHAUSTED naming the bound", async () => {
    const c = open();
    for (let i = 0; i < 4; i++) c.request({ name: "api", tenant: `t${i}` });
    const status = await c.ended;
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toMatch(/max_buckets_per_stream \(3\)/);
  });

  it("refuses streams past max_streams", async () => {
    // Two streams above are still open; the others have ended.
    const extra = [open(), open(), open(), open(), open()];
    for (const c of extra) c.request({ name: "api", tenant: "s" });
    const statuses = await Promise.race([
      Promise.any(extra.map((c) => c.ended)),
      sleep(5000).then(() => undefined),
    ]);
    expect(statuses?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(statuses?.details).toMatch(/max_streams \(5\)/);
  });
});
