import { writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningServer } from "../../src/app/serve.js";
import { RLQS_SERVICE, serviceDefinition } from "../../src/protocol/proto.js";
import { sha256 } from "../../src/security/identity.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/**
 * RLQS under an authorisation file: a stream is a gateway's report, so it needs report rights in
 * some domain (or an operator); anyone else's stream is refused whole before a report is read.
 */

const LIMITS = `
domain: api
descriptors:
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: 200 }
`;
const RLQS = `
rlqs:
  mappings:
    - domain: envoy
      match: { name: api }
      limit_domain: api
      descriptors:
        - { key: tenant, bucket_key: tenant }
  report_interval: 50ms
`;
const TOKENS = { reporter: "t-report", checker: "t-check", server: "t-server" };

describe("RLQS under an auth file", () => {
  let server: RunningServer;
  let address: string;
  beforeAll(async () => {
    const dir = tempDir("shardlimit-rlqs-auth-");
    writeFileSync(path.join(dir, "rlqs.yaml"), RLQS);
    const auth = path.join(dir, "auth.yaml");
    const token = path.join(dir, "server.token");
    writeFileSync(token, TOKENS.server);
    writeFileSync(
      auth,
      `tokens:
  reporter: ${sha256(TOKENS.reporter).toString("hex")}
  checker: ${sha256(TOKENS.checker).toString("hex")}
  server: ${sha256(TOKENS.server).toString("hex")}
gateways:
  # The server itself: its RLQS streams report to the owners as a gateway of these domains.
  - {identity: server, domains: [api], may: [report, limits]}
  - {identity: reporter, domains: [api], may: [report, limits]}
  - {identity: checker, domains: [api], may: [check]}
`,
    );
    server = await startLoopbackServer(writeConfig(LIMITS, dir), {
      rlqsConfigPath: path.join(dir, "rlqs.yaml"),
      serve: { authFile: auth, tokenFile: token },
    });
    address = `127.0.0.1:${server.grpcPort}`;
  });
  afterAll(async () => {
    await server?.shutdown();
  });

  /** A stream sending `token` (none: anonymous) that reports one bucket; its actions and status. */
  function stream(token?: string) {
    const Client = grpc.makeClientConstructor(serviceDefinition(RLQS_SERVICE), RLQS_SERVICE);
    const raw = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client &
      Record<string, (m: grpc.Metadata) => grpc.ClientDuplexStream<object, { bucketAction: object[] }>>;
    const md = new grpc.Metadata();
    if (token !== undefined) md.set("authorization", `Bearer ${token}`);
    const s = raw.StreamRateLimitQuotas!.call(raw, md);
    const actions: object[] = [];
    const status = new Promise<grpc.StatusObject>((resolve) => s.on("status", resolve));
    s.on("data", (m) => actions.push(...m.bucketAction));
    s.on("error", () => {});
    s.write({
      domain: "envoy",
      bucketQuotaUsages: [
        {
          bucketId: { bucket: { name: "api", tenant: "t1" } },
          timeElapsed: { seconds: 1 },
          numRequestsAllowed: 5,
        },
      ],
    });
    return { raw, s, actions, status };
  }

  it("refuses a stream from an identity without report rights, naming it", async () => {
    for (const [token, who] of [
      [TOKENS.checker, "checker"],
      [undefined, "anonymous"],
    ] as const) {
      const { raw, status } = stream(token);
      const st = await status;
      expect(st.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(st.details).toContain("StreamRateLimitQuotas");
      expect(st.details).toContain(who);
      raw.close();
    }
  });

  it("serves a stream from a gateway that may report", async () => {
    const { raw, s, actions } = stream(TOKENS.reporter);
    for (let i = 0; i < 100 && actions.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(actions.length).toBeGreaterThan(0);
    s.end();
    raw.close();
  });
});
