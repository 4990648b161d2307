import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../src/testkit/cli.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/**
 * The README's openssl commands (Production, Certificates), run as written: the certificates they
 * make must chain to the CA, carry the names the chart's StatefulSet gives its members, and carry
 * an mTLS handshake to a member's name, from a gateway and from a peer.
 */

const NS = "ratelimit";
const PEERS = "rl-shardlimit-peers";

function readmeOpensslBlock(): string {
  const readme = readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const found = blocks.filter((b) => b.includes("openssl req -x509"));
  expect(found, "one ```sh block in README.md with the CA's openssl command").toHaveLength(1);
  return found[0]!;
}

let dir: string;
const file = (name: string) => readFileSync(path.join(dir, name));

beforeAll(() => {
  dir = tempDir("shardlimit-readme-certs-");
  const r = spawnSync("bash", ["-euo", "pipefail", "-c", readmeOpensslBlock()], {
    cwd: dir,
    encoding: "utf8",
    timeout: 30_000,
  });
  expect(r.status, r.stderr).toBe(0);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A TLS server on the servers' certificate that requires a client certificate from the CA. */
async function withServer<T>(fn: (port: number) => Promise<T>): Promise<T> {
  const server = tls.createServer(
    {
      key: file("tls.key"),
      cert: file("tls.crt"),
      ca: file("ca.crt"),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (socket) => socket.end("ok"),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    return await fn((server.address() as AddressInfo).port);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Connects as `client` (key and cert file stems, or none) to `servername`: the answer, or the error code. */
function call(port: number, servername: string, client: string | undefined): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port,
      servername,
      ca: file("ca.crt"),
      ...(client ? { key: file(`${client}.key`), cert: file(`${client}.crt`) } : {}),
    });
    let got = "";
    s.on("data", (d) => {
      got += d.toString();
    });
    s.on("end", () => resolve(got));
    s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe("the README's certificates", () => {
  it("chain to the CA with the StatefulSet's names and the usages each side needs", () => {
    const ca = new X509Certificate(file("ca.crt"));
    const server = new X509Certificate(file("tls.crt"));
    const gateway = new X509Certificate(file("gateway.crt"));
    expect(ca.ca).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(gateway.verify(ca.publicKey)).toBe(true);
    expect(server.subjectAltName).toContain(`DNS:*.${PEERS}.${NS}.svc`);
    expect(server.subjectAltName).toContain(`DNS:rl-shardlimit.${NS}.svc`);
    expect(server.keyUsage).toEqual(expect.arrayContaining(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]));
    expect(gateway.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(server.checkHost(`rl-shardlimit-2.${PEERS}.${NS}.svc`)).toBeDefined();
  });

  it("carry mTLS to a member's and the Service's names, from a gateway and from a peer", async () => {
    await withServer(async (port) => {
      expect(await call(port, `rl-shardlimit-0.${PEERS}.${NS}.svc`, "gateway")).toBe("ok");
      expect(await call(port, `rl-shardlimit.${NS}.svc`, "gateway")).toBe("ok");
      expect(await call(port, `rl-shardlimit-1.${PEERS}.${NS}.svc`, "tls")).toBe("ok");
      // Another Service's name is not in the certificate; no client certificate, no connection.
      expect(await call(port, `rl-shardlimit-0.other.${NS}.svc`, "gateway")).toBe(
        "ERR_TLS_CERT_ALTNAME_INVALID",
      );
      expect(await call(port, `rl-shardlimit-0.${PEERS}.${NS}.svc`, undefined)).not.toBe("ok");
    });
  });
});
