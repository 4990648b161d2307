import { copyFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLimiter } from "../../src/client/create.js";
import { systemClock } from "../../src/core/clock.js";
import { NotReadyError } from "../../src/core/errors.js";
import { EnvoyCode } from "../../src/protocol/messages.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { type ClientTlsOptions, clientTls } from "../../src/security/tls.js";
import { type IssuedCert, LOOPBACK_NAMES, makeTestPki, type TestPki } from "../../src/testkit/certs.js";
import { ensureBuilt, killAllCli, runCli } from "../../src/testkit/cli.js";
import { type ServerProcess, serverProcess, writeConfig } from "../../src/testkit/serve.js";
import { peerSerial } from "../../src/testkit/tls.js";
import { waitFor } from "../../src/testkit/wait.js";
import { desc, startCli } from "../server/harness.js";

/**
 * One real `shardlimit serve` with `--tls-client-auth require` (mutual TLS): who gets through
 * and who does not, the flag combinations refused at start, a bad rotation refused while
 * serving, and the sidecar with TLS on both its sides.
 */

const YAML = `
domain: api
descriptors:
  - key: k
    rate_limit: { unit: hour, requests_per_unit: 1000 }
`;

const silent = { info: () => {}, error: () => {} };

let pki: TestPki;
let own: IssuedCert;
let server: ServerProcess;
let configPath: string;
const lines: string[] = [];

beforeAll(async () => {
  ensureBuilt();
  pki = makeTestPki();
  // The server's own files, so rotating them leaves the kit's originals alone.
  own = {
    cert: path.join(pki.ca.dir, "own.pem"),
    key: path.join(pki.ca.dir, "own-key.pem"),
    serial: pki.server.serial,
  };
  copyFileSync(pki.server.cert, own.cert);
  copyFileSync(pki.server.key, own.key);
  configPath = writeConfig(YAML);
  server = await serverProcess({
    id: "tls",
    configPath,
    cli: "built",
    extraArgs: [
      ...["--tls-cert", own.cert, "--tls-key", own.key, "--tls-ca", pki.ca.caFile],
      ...["--tls-client-auth", "require", "--tls-reload-interval", "200"],
    ],
    onLine: (l) => lines.push(l),
  });
  await server.start();
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await killAllCli();
});

/** One Check through a fresh channel with `tls` (plaintext without); the gRPC status code, 0 if it went through. */
async function checkWith(tls: ClientTlsOptions | undefined): Promise<number> {
  const sec = tls ? clientTls(tls, { clock: systemClock, log: silent }) : undefined;
  const rpc = sec
    ? connect(server.address, sec.options, undefined, sec.credentials)
    : connect(server.address);
  try {
    const r = await rpc.check({ items: [{ key: "api/k=a", cost: 1 }] }, { deadlineMs: 3000 });
    expect(r.results[0]!.allowed).toBe(true);
    return 0;
  } catch (err) {
    return (err as grpc.ServiceError).code;
  } finally {
    rpc.close();
    sec?.source.close();
  }
}

describe("a server with --tls-client-auth require", () => {
  it("serves a client with a certificate from its CA", async () => {
    expect(await checkWith({ ca: pki.ca.caFile, cert: pki.client.cert, key: pki.client.key })).toBe(0);
  });

  it("refuses a plaintext client, one without a certificate, and one with a certificate from another CA", async () => {
    expect(await checkWith(undefined)).toBe(grpc.status.UNAVAILABLE);
    expect(await checkWith({ ca: pki.ca.caFile })).toBe(grpc.status.UNAVAILABLE);
    expect(
      await checkWith({ ca: pki.ca.caFile, cert: pki.wrongCaClient.cert, key: pki.wrongCaClient.key }),
    ).toBe(grpc.status.UNAVAILABLE);
  });

  it("is refused by a client whose server-name check fails, or that trusts another CA", async () => {
    const good = { cert: pki.client.cert, key: pki.client.key };
    expect(await checkWith({ ca: pki.ca.caFile, ...good, serverName: "elsewhere.invalid" })).toBe(
      grpc.status.UNAVAILABLE,
    );
    expect(await checkWith({ ca: pki.wrongCa.caFile, ...good })).toBe(grpc.status.UNAVAILABLE);
    // The name on the certificate, asked for explicitly, passes.
    expect(await checkWith({ ca: pki.ca.caFile, ...good, serverName: "localhost" })).toBe(0);
  });

  it("the gateway client connects with createLimiter({ tls }), and without a certificate it does not", async () => {
    const limiter = await createLimiter({
      servers: [server.address],
      clientId: "gw-tls",
      connectTimeoutMs: 5000,
      tls: { ca: pki.ca.caFile, cert: pki.client.cert, key: pki.client.key },
    });
    try {
      expect(limiter.ready).toBe(true);
    } finally {
      limiter.close();
    }
    await expect(
      createLimiter({
        servers: [server.address],
        clientId: "gw-anon",
        connectTimeoutMs: 1500,
        tls: { ca: pki.ca.caFile },
      }),
    ).rejects.toBeInstanceOf(NotReadyError);
  });

  it("a rotation to files that do not fit is refused (logged naming the file) and the old certificate keeps serving", async () => {
    const client = { ca: pki.ca.caFile, cert: pki.client.cert, key: pki.client.key };
    expect(await peerSerial(server.address, client)).toBe(own.serial);
    // The key of another certificate: refused.
    copyFileSync(pki.client.key, own.key);
    await waitFor(
      "the refused rotation in the log",
      async () => lines.some((l) => l.includes("cannot be used") && l.includes(own.key)),
      10_000,
      50,
    );
    expect(await peerSerial(server.address, client)).toBe(own.serial);
    expect(await checkWith(client)).toBe(0);
    // A good re-issue is taken.
    const next = pki.ca.reissue(own, LOOPBACK_NAMES);
    await waitFor(
      "the new certificate served",
      async () => (await peerSerial(server.address, client)) === next.serial,
      10_000,
      50,
    );
    expect(await checkWith(client)).toBe(0);
  });
});

describe("serve refuses TLS flags that cannot work, naming them", () => {
  const base = () => ["serve", "--config", configPath, "--grpc-port", "0", "--http-port", "0"];
  // The rules themselves are unit-tested (test/cli/tls-options.test.ts); these show the CLI says them.
  it("flag combinations: exit 2 with the flags named", () => {
    const cases: [string[], string][] = [
      [["--tls-cert", pki.server.cert], "--tls-cert needs --tls-key"],
      [
        ["--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-client-auth", "require"],
        "--tls-client-auth require needs --tls-ca",
      ],
      [
        ["--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--etcd", "https://127.0.0.1:1"],
        "--tls-cert with --etcd needs --tls-ca",
      ],
      [["--etcd-ca", pki.ca.caFile], "--etcd-ca needs --etcd"],
      [["--etcd", "http://127.0.0.1:1", "--etcd-ca", pki.ca.caFile], "use https://"],
      [["--etcd", "https://127.0.0.1:1", "--etcd-cert", pki.client.cert], "--etcd-cert needs --etcd-key"],
    ];
    for (const [args, message] of cases) {
      const r = runCli([...base(), ...args]);
      expect(r.stderr, args.join(" ")).toContain(message);
      expect(r.status, args.join(" ")).toBe(2);
    }
  }, 60_000);

  it("bad files: the error names the file", () => {
    const missing = path.join(pki.ca.dir, "nope.pem");
    const cases: [string[], string][] = [
      [["--tls-cert", pki.server.cert, "--tls-key", pki.client.key], pki.client.key],
      [["--tls-cert", missing, "--tls-key", pki.server.key], missing],
      [
        ["--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-ca", pki.server.key],
        pki.server.key,
      ],
      [["--etcd", "https://127.0.0.1:1", "--etcd-ca", pki.ca.caFile, "--etcd-auth-file", missing], missing],
    ];
    for (const [args, file] of cases) {
      const r = runCli([...base(), ...args]);
      expect(r.stderr, args.join(" ")).toContain(file);
      expect(r.status, args.join(" ")).not.toBe(0);
    }
  }, 60_000);
});

describe("shardlimit sidecar with TLS both ways", () => {
  let envoy: RateLimiterRpc;
  let envoySec: ReturnType<typeof clientTls>;
  let port = 0;
  beforeAll(async () => {
    const side = startCli([
      ...["sidecar", "--listen", "127.0.0.1:0", "--servers", server.address, "--log-level", "warn"],
      // As long as this test waits for it (a busy machine), not the 10 s default.
      ...["--connect-timeout", "40000"],
      // Towards the server: mutual TLS with the client certificate.
      ...["--tls-ca", pki.ca.caFile, "--tls-cert", pki.client.cert, "--tls-key", pki.client.key],
      // Its Envoy port: TLS, client certificates required.
      ...["--listen-tls-cert", pki.server.cert, "--listen-tls-key", pki.server.key],
      ...["--listen-tls-ca", pki.ca.caFile, "--listen-tls-client-auth", "require"],
    ]);
    // Generous: it connects to the server (TLS handshakes, limits, assignment) before it listens,
    // and the machine may be busy; an exit ends the wait at once with what it said.
    await waitFor(
      "sidecar port",
      () => side.lines.some((l) => l.includes('"listening"')),
      40_000,
      50,
      () =>
        side.child.exitCode !== null || side.child.signalCode !== null
          ? new Error(
              `sidecar exited (code ${side.child.exitCode}, signal ${side.child.signalCode}): ${side.output()}`,
            )
          : undefined,
    );
    port = JSON.parse(side.lines.find((l) => l.includes('"listening"'))!).listening as number;
    envoySec = clientTls(
      { ca: pki.ca.caFile, cert: pki.client.cert, key: pki.client.key },
      { clock: systemClock, log: silent },
    );
    envoy = connect(`127.0.0.1:${port}`, envoySec.options, undefined, envoySec.credentials);
  }, 60_000);
  afterAll(() => {
    envoy?.close();
    envoySec?.source.close();
  });

  it("answers Envoy over mutual TLS, from limits it fetched over mutual TLS; refuses plaintext", async () => {
    const r = await envoy.shouldRateLimit(
      { domain: "api", descriptors: [desc("k=sidecar")] },
      { deadlineMs: 3000 },
    );
    expect(r.overallCode).toBe(EnvoyCode.OK);
    expect(r.statuses[0]!.currentLimit).toBeTruthy();
    const plain = connect(`127.0.0.1:${port}`);
    try {
      await expect(
        plain.shouldRateLimit({ domain: "api", descriptors: [desc("k=sidecar")] }, { deadlineMs: 2000 }),
      ).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      plain.close();
    }
  });
});
