import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/app/serve.js";
import { makeTestPki, type TestPki } from "../../src/testkit/certs.js";
import { EnvoyRlqsClient } from "../../src/testkit/rlqs-client.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * RLQS in operation on one in-process server: its metrics, `--rlqs-config` reloaded when the file
 * changes (a bad file logged naming the error, the old mapping kept), and the RLQS port under the
 * server's TLS.
 */

const LIMITS = `
domain: api
descriptors:
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: 1000 }
`;
const rlqs = (unmatched: string) => `
rlqs:
  mappings:
    - domain: envoy
      match: { name: api }
      limit_domain: api
      descriptors:
        - { key: tenant, bucket_key: tenant }
  unmatched: ${unmatched}
  report_interval: 50ms
`;

/** A server logging into `lines` (JSON objects). */
async function start(dir: string, lines: Record<string, unknown>[], tls?: TestPki): Promise<RunningServer> {
  const log = pino({ level: "info" }, { write: (l: string) => lines.push(JSON.parse(l)) });
  return startServer(
    {
      configPath: writeConfig(LIMITS, dir),
      rlqsConfigPath: path.join(dir, "rlqs.yaml"),
      grpcHost: "127.0.0.1",
      grpcPort: 0,
      httpHost: "127.0.0.1",
      httpPort: 0,
      shutdownGraceMs: 200,
      ...(tls
        ? {
            tls: {
              cert: tls.server.cert,
              key: tls.server.key,
              ca: tls.ca.caFile,
              clientAuth: "none" as const,
            },
          }
        : {}),
    },
    log,
  );
}

const metric = (text: string, name: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
};

describe("RLQS metrics and --rlqs-config reload", () => {
  let server: RunningServer;
  let dir: string;
  const lines: Record<string, unknown>[] = [];
  const clients: EnvoyRlqsClient[] = [];
  const open = () => {
    const c = new EnvoyRlqsClient({
      address: `127.0.0.1:${server.grpcPort}`,
      domain: "envoy",
      reportIntervalMs: 50,
    });
    clients.push(c);
    return c;
  };
  const scrape = async () => (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();

  beforeAll(async () => {
    dir = tempDir("shardlimit-rlqs-ops-");
    writeFileSync(path.join(dir, "rlqs.yaml"), rlqs("allow_all"));
    server = await start(dir, lines);
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await server?.shutdown();
  });

  it("counts streams, buckets, reports, actions by kind and refusals", async () => {
    const c = open();
    c.request({ name: "api", tenant: "a" });
    c.request({ name: "web", tenant: "w" });
    // Both allowed: the unmatched bucket at once, the other on its owner's ALLOW policy (far under 1000/s).
    await waitFor("two allow_all assignments sent", async () => {
      return metric(await scrape(), 'shardlimit_rlqs_actions_total{kind="allow_all"}') >= 2;
    });
    const m = await scrape();
    expect(metric(m, "shardlimit_rlqs_streams")).toBe(1);
    expect(metric(m, "shardlimit_rlqs_buckets")).toBe(2);
    expect(metric(m, "shardlimit_rlqs_reports_total")).toBeGreaterThanOrEqual(2);
    expect(metric(m, "shardlimit_rlqs_bucket_usages_total")).toBeGreaterThanOrEqual(2);
    // A stream whose first report names no domain is refused.
    const bad = new EnvoyRlqsClient({
      address: `127.0.0.1:${server.grpcPort}`,
      domain: "",
      reportIntervalMs: 50,
    });
    clients.push(bad);
    bad.request({ name: "api", tenant: "a" });
    expect((await bad.ended).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(metric(await scrape(), 'shardlimit_rlqs_refusals_total{code="INVALID_ARGUMENT"}')).toBe(1);
  });

  it("reloads the mapping when the file changes; a bad file is logged naming the error and the old mapping kept", async () => {
    const c = open();
    const web = { name: "web", tenant: "w" };
    expect(c.request(web)).toBe(true);
    // unmatched: deny_all from now on: the open stream's unmatched bucket is told DENY_ALL.
    writeFileSync(path.join(dir, "rlqs.yaml"), rlqs("deny_all"));
    await waitFor("the bucket denied", () => !c.request(web), 5000);
    expect(lines.some((l) => l.msg === "rlqs config reloaded")).toBe(true);

    writeFileSync(path.join(dir, "rlqs.yaml"), rlqs("maybe"));
    await waitFor(
      "the refusal logged",
      () => lines.some((l) => l.msg === "rlqs config reload refused; the previous mapping stays in force"),
      5000,
    );
    const refusal = lines.find(
      (l) => l.msg === "rlqs config reload refused; the previous mapping stays in force",
    )!;
    expect(String(refusal.err)).toContain("rlqs.unmatched");
    expect(server.reload()).toBe(false);
    // deny_all still in force: a new unmatched bucket on a new stream is denied after its first report.
    const d = open();
    const other = { name: "other", tenant: "o" };
    d.request(other);
    await waitFor("the new bucket denied", () => !d.request(other), 5000);
  });
});

describe("RLQS under the server's TLS", () => {
  let server: RunningServer;
  let pki: TestPki;
  const clients: EnvoyRlqsClient[] = [];
  beforeAll(async () => {
    const dir = tempDir("shardlimit-rlqs-tls-");
    writeFileSync(path.join(dir, "rlqs.yaml"), rlqs("allow_all"));
    pki = makeTestPki();
    server = await start(dir, [], pki);
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await server?.shutdown();
  });
  const open = (credentials: grpc.ChannelCredentials) => {
    const c = new EnvoyRlqsClient({
      address: `127.0.0.1:${server.grpcPort}`,
      domain: "envoy",
      reportIntervalMs: 50,
      credentials,
    });
    clients.push(c);
    return c;
  };

  it("a client trusting the CA gets assignments; one without it, or in plaintext, is refused", async () => {
    const ok = open(grpc.credentials.createSsl(readFileSync(pki.ca.caFile)));
    ok.request({ name: "api", tenant: "a" });
    await waitFor("an assignment over TLS", () => ok.assignments > 0, 5000);
    const noCa = open(grpc.credentials.createSsl());
    noCa.request({ name: "api", tenant: "a" });
    const plain = open(grpc.credentials.createInsecure());
    plain.request({ name: "api", tenant: "a" });
    for (const c of [noCa, plain]) {
      const end = await c.ended;
      expect(end.code).toBe(grpc.status.UNAVAILABLE);
      expect(c.assignments).toBe(0);
    }
  });
});
