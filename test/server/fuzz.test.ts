import { writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../../src/protocol/rpc.js";
import { sha256 } from "../../src/security/identity.js";
import { ensureBuilt } from "../../src/testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { fuzzServer, MUTATION_KINDS } from "../../src/testkit/fuzz.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/**
 * Every RPC of a real cluster member (its own API, Envoy's, and the server-to-server Peer
 * service a forged peer could call), fed mutated requests: no crash, no INTERNAL, and nothing
 * changed by a refused call. `FUZZ_CASES` sets the cases per method (`npm run test:fuzz` runs
 * more); the seed is fixed, so a failure replays. The member runs with an auth file: the fuzzer
 * calls as an operator, so every method is exercised behind the authorisation check, and a
 * gateway's calls to the Peer service are all refused, changing nothing.
 */

const CASES = Number(process.env.FUZZ_CASES ?? 40);
const SEED = Number(process.env.FUZZ_SEED ?? 11);

/** An operator and a gateway, by token. */
const AUTH = `tokens:
  ops: ${sha256("fuzz-operator").toString("hex")}
  gw: ${sha256("fuzz-gateway").toString("hex")}
gateways: [{identity: gw, domains: [api]}]
operators: [{identity: ops}]
`;
const bearer = (token: string) => () => {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
};

const YAML = `
domain: api
descriptors:
  - key: fz
    rate_limit: { unit: minute, requests_per_unit: 1000 }
  - key: conc
    rate_limit: { algorithm: concurrency, requests_per_unit: 4 }
`;

describe("RPC fuzzing of a cluster member", () => {
  let etcd: EtcdProcess;
  let server: ServerProcess;

  beforeAll(async () => {
    ensureBuilt();
    etcd = await startEtcd();
    server = await serverProcess({
      id: "fz1",
      configPath: writeConfig(YAML),
      etcdUrl: etcd.url,
      prefix: "/fuzz/",
      cli: "built",
      extraArgs: ["--auth-file", authFile()],
    });
    await server.start();
    await waitAllReady([server]);
  });

  afterAll(async () => {
    await server?.stop("SIGKILL");
    await etcd?.destroy();
  });

  it("no crash, no INTERNAL, nothing changed by a refused call, for every method and mutation", {
    timeout: 60_000 + CASES * 1_000,
  }, async () => {
    const reports = await fuzzServer(
      {
        address: server.address,
        metricsUrl: `http://127.0.0.1:${server.httpPort}/metrics`,
        services: [
          "shardlimit.v1.RateLimiter",
          "envoy.service.ratelimit.v3.RateLimitService",
          "shardlimit.v1.Peer",
        ],
        metadata: bearer("fuzz-operator"),
      },
      CASES,
      SEED,
    );
    console.log(
      `fuzz: ${CASES} cases per method, seed ${SEED}, mutations: ${MUTATION_KINDS.join(", ")}\n` +
        reports
          .map(
            (r) =>
              `${r.method.padEnd(58)} cases ${r.cases}  ok ${r.ok}  refused ${JSON.stringify(r.refused)}  ` +
              `internal ${r.internal}  changed-by-refused ${r.changedByRefused}`,
          )
          .join("\n"),
    );
    expect(reports.map((r) => r.method)).toEqual(
      expect.arrayContaining([
        "shardlimit.v1.Peer/Handoff",
        "shardlimit.v1.Peer/Reclaim",
        "shardlimit.v1.Peer/Replicate",
        "shardlimit.v1.Peer/Standby",
      ]),
    );
    for (const r of reports) {
      expect(r.cases, r.method).toBe(CASES);
      expect(r.problems, r.method).toEqual([]);
    }
    // The process lived through it and still answers exactly.
    expect(server.child?.child.exitCode).toBeNull();
    const rpc = connect(server.address, {}, undefined, undefined, bearer("fuzz-operator"));
    try {
      const res = await rpc.check({ items: [{ key: "api/fz=after-fuzz", cost: 1 }] }, { deadlineMs: 5000 });
      expect(res.results[0]).toMatchObject({ allowed: true, remaining: 999 });
    } finally {
      rpc.close();
    }
  });

  it("a gateway's fuzzed Peer calls are all refused PERMISSION_DENIED, changing nothing", async () => {
    const reports = await fuzzServer(
      {
        address: server.address,
        metricsUrl: `http://127.0.0.1:${server.httpPort}/metrics`,
        services: ["shardlimit.v1.Peer"],
        metadata: bearer("fuzz-gateway"),
      },
      Math.min(CASES, 10),
      SEED,
    );
    for (const r of reports) {
      expect(r.refused, r.method).toEqual({ PERMISSION_DENIED: r.cases });
      expect(r.problems, r.method).toEqual([]);
    }
  });
});

function authFile(): string {
  const file = path.join(tempDir("shardlimit-fuzz-"), "auth.yaml");
  writeFileSync(file, AUTH);
  return file;
}
