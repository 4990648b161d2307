import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { ENVOY_RLS_SERVICE, RATE_LIMITER_SERVICE } from "../../src/protocol/proto.js";
import { httpGet } from "../../src/testkit/http.js";
import { waitFor } from "../../src/testkit/wait.js";
import { callError, desc, startTestServer, T0, type TestServer } from "./harness.js";

/** What operators touch: HTTP health, readiness and metrics, gRPC health and reflection, reloads. */

const CONFIG = (fwLimit: number) => `
domain: api
descriptors:
  - key: fw
    rate_limit: { unit: minute, requests_per_unit: ${fwLimit} }
`;

const LOADER_OPTIONS: protoLoader.Options = { enums: String, longs: Number, defaults: true, oneofs: true };

// biome-ignore lint/suspicious/noExplicitAny: proto-loader's dynamic clients are untyped.
type Dynamic = any;

function loadClient(file: string, service: string, address: string): grpc.Client & Dynamic {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(file, LOADER_OPTIONS)) as Dynamic;
  const Ctor = service.split(".").reduce((o: Dynamic, k) => o[k], pkg) as typeof grpc.Client;
  return new Ctor(address, grpc.credentials.createInsecure());
}

/** The v1 reflection proto shipped inside @grpc/reflection. */
const REFLECTION_PROTO = path.resolve(
  path.dirname(createRequire(import.meta.url).resolve("@grpc/reflection")),
  "../proto/grpc/reflection/v1/reflection.proto",
);

describe("HTTP and gRPC operations endpoints", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  beforeAll(async () => {
    t = await startTestServer(CONFIG(10), { clock });
  });
  afterAll(async () => {
    await t.stop();
  });

  it("/healthz and /readyz answer 200 while serving; other paths 404, other methods 405", async () => {
    expect(await httpGet(`${t.httpUrl}/healthz`)).toEqual({ status: 200, body: "ok\n" });
    expect(await httpGet(`${t.httpUrl}/readyz`)).toEqual({ status: 200, body: "ready\n" });
    expect(await httpGet(`${t.httpUrl}/readyz?verbose=1`)).toMatchObject({ status: 200 });
    const missing = await httpGet(`${t.httpUrl}/nope`);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatch(/\/metrics/);
    const post = await fetch(`${t.httpUrl}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    expect(t.server.isReady()).toBe(true);
  });

  it("/metrics has decisions by domain and result, counters, report sizes and event loop lag", async () => {
    await t.rpc.check({ items: [{ key: "api/fw=m", cost: 10 }] });
    await t.rpc.check({ items: [{ key: "api/fw=m", cost: 1 }] });
    await t.rpc.shouldRateLimit({ domain: "elsewhere", descriptors: [desc("a=b")] });
    await t.rpc.reportAndGetPolicy({
      clientId: "gw",
      seq: 1,
      entries: [{ key: "api/fw=r", admitted: 1, rejected: 0, held: 0, windowAdmitted: 0 }],
    });
    const res = await fetch(`${t.httpUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    const line = (re: RegExp) => text.split("\n").find((l) => re.test(l));
    expect(line(/^shardlimit_decisions_total\{api="check",domain="api",result="ok"\} 1$/)).toBeDefined();
    expect(
      line(/^shardlimit_decisions_total\{api="check",domain="api",result="over_limit"\} 1$/),
    ).toBeDefined();
    // Domains outside the config are folded into one label value.
    expect(
      line(/^shardlimit_decisions_total\{api="envoy",domain="\(unknown\)",result="no_limit"\} 1$/),
    ).toBeDefined();
    expect(line(/^shardlimit_counters \d+$/)).toBe(`shardlimit_counters ${t.server.engine.size}`);
    expect(line(/^shardlimit_report_entries_count 1$/)).toBeDefined();
    expect(line(/^shardlimit_report_entries_bucket\{le="1"\} 1$/)).toBeDefined();
    expect(line(/^shardlimit_ready 1$/)).toBeDefined();
    expect(line(/^shardlimit_request_duration_seconds_count\{method="Check",code="OK"\} 2$/)).toBeDefined();
    expect(line(/^nodejs_eventloop_lag_seconds \d/)).toBeDefined();
  });

  it("grpc.health.v1.Health/Check: SERVING for the server and each service; NOT_FOUND for others", async () => {
    const health = loadClient(healthProtoPath, "grpc.health.v1.Health", `127.0.0.1:${t.server.grpcPort}`);
    const check = (service: string) =>
      new Promise<{ status: string }>((resolve, reject) =>
        health.Check({ service }, (err: grpc.ServiceError | null, res: { status: string }) =>
          err ? reject(err) : resolve(res),
        ),
      );
    try {
      for (const service of ["", RATE_LIMITER_SERVICE, ENVOY_RLS_SERVICE]) {
        expect(await check(service)).toEqual({ status: "SERVING" });
      }
      const err = await callError(check("no.such.Service"));
      expect(err.code).toBe(grpc.status.NOT_FOUND);
    } finally {
      health.close();
    }
  });

  it("server reflection lists both services and describes them", async () => {
    const client = loadClient(
      REFLECTION_PROTO,
      "grpc.reflection.v1.ServerReflection",
      `127.0.0.1:${t.server.grpcPort}`,
    );
    try {
      const ask = (req: object) =>
        new Promise<Dynamic>((resolve, reject) => {
          const call = client.ServerReflectionInfo();
          call.on("data", (res: Dynamic) => {
            resolve(res);
            call.end();
          });
          call.on("error", reject);
          call.write(req);
        });
      const list = await ask({ listServices: "" });
      const names = list.listServicesResponse.service.map((s: { name: string }) => s.name);
      expect(names).toEqual(expect.arrayContaining([RATE_LIMITER_SERVICE, ENVOY_RLS_SERVICE]));

      const file = await ask({ fileContainingSymbol: RATE_LIMITER_SERVICE });
      const protos: Buffer[] = file.fileDescriptorResponse.fileDescriptorProto;
      expect(protos.length).toBeGreaterThan(0);
      expect(Buffer.concat(protos).toString("latin1")).toContain("ReportAndGetPolicy");
    } finally {
      client.close();
    }
  });
});

describe("config reload", () => {
  let t: TestServer;
  const clock = new ManualClock(T0);
  beforeAll(async () => {
    t = await startTestServer(CONFIG(10), { clock });
  });
  afterAll(async () => {
    await t.stop();
  });

  let n = 0;
  /** The limit a fresh key sees now, asked over gRPC. */
  const limitNow = async () =>
    (await t.rpc.check({ items: [{ key: `api/fw=k${++n}`, cost: 1 }] })).results[0]!.limit;
  const metrics = async () => (await httpGet(`${t.httpUrl}/metrics`)).body;

  it("reload() applies a changed limit; an invalid config is refused and the old limits keep serving", async () => {
    expect(await limitNow()).toBe(10);
    writeFileSync(t.configPath, CONFIG(3));
    expect(t.server.reload()).toBe(true);
    expect(await limitNow()).toBe(3);

    const counted = await t.rpc.check({ items: [{ key: "api/fw=kept", cost: 2 }] });
    expect(counted.results[0]).toMatchObject({ allowed: true, remaining: 1 });

    writeFileSync(t.configPath, CONFIG(3).replace("unit: minute", "unit: fortnight"));
    expect(t.server.reload()).toBe(false);
    expect(await limitNow()).toBe(3);
    // Counts survive both the good and the refused reload.
    const after = await t.rpc.check({ items: [{ key: "api/fw=kept", cost: 1 }] });
    expect(after.results[0]).toMatchObject({ allowed: true, remaining: 0 });
    expect(await metrics()).toMatch(/^shardlimit_config_reloads_total\{result="error"\} 1$/m);
    expect(t.server.isReady()).toBe(true);
  });

  it("the file watcher applies a rewritten file, refuses an invalid one, then applies the next valid one", async () => {
    // The watcher's debounce runs on the server's clock: each poll moves it past the quiet period,
    // so a file event that has arrived (in real time) is acted on.
    const debounced = () => clock.advance(200);
    writeFileSync(t.configPath, CONFIG(7));
    await waitFor("the watcher to apply requests_per_unit 7", async () => {
      debounced();
      return (await limitNow()) === 7;
    });

    writeFileSync(t.configPath, "domain: api\ndescriptors: {}\n");
    await waitFor("the watcher to refuse the invalid file", async () => {
      debounced();
      return /^shardlimit_config_reloads_total\{result="error"\} [2-9]/m.test(await metrics());
    });
    expect(await limitNow()).toBe(7);

    writeFileSync(t.configPath, CONFIG(4));
    await waitFor("the watcher to apply requests_per_unit 4", async () => {
      debounced();
      return (await limitNow()) === 4;
    });
  });

  it("a reload that removes a domain is refused (unknown domains are unlimited); the old limits keep serving", async () => {
    const before = (await limitNow())!;
    writeFileSync(t.configPath, CONFIG(before).replace("domain: api", "domain: apii"));
    expect(t.server.reload()).toBe(false);
    expect(await limitNow()).toBe(before);
    writeFileSync(t.configPath, CONFIG(before));
    expect(t.server.reload()).toBe(true);
  });
});
