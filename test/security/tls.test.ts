import { copyFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.js";
import { OptionsError } from "../../src/core/errors.js";
import {
  type ChannelSecurity,
  type ClientAuth,
  channelSecurity,
  readTlsFiles,
  serverCredentials,
  type TlsLog,
  TlsSource,
} from "../../src/security/tls.js";
import { LOOPBACK_NAMES, makeTestPki, type TestPki } from "../../src/testkit/certs.js";
import { rawMethod } from "../../src/testkit/raw-method.js";
import { peerSerial } from "../../src/testkit/tls.js";

/** A log that keeps what it is told. */
function memoryLog(): TlsLog & { errors: string[]; infos: string[] } {
  const errors: string[] = [];
  const infos: string[] = [];
  return {
    errors,
    infos,
    error: (obj, msg) => errors.push(`${msg} ${JSON.stringify(obj)}`),
    info: (obj, msg) => infos.push(`${msg} ${JSON.stringify(obj)}`),
  };
}

let pki: TestPki;
beforeAll(() => {
  pki = makeTestPki();
});

describe("readTlsFiles", () => {
  it("takes a good certificate, key and CA, with the certificate's serial", () => {
    const m = readTlsFiles({ ...pki.server, ca: pki.ca.caFile });
    expect(m.serial).toBe(pki.server.serial);
    expect(m.ca?.toString()).toContain("BEGIN CERTIFICATE");
  });

  it("refuses each bad file with an error naming it", () => {
    const bad = path.join(pki.ca.dir, "garbage.pem");
    writeFileSync(bad, "not a certificate\n");
    const missing = path.join(pki.ca.dir, "missing.pem");
    const cases: [Parameters<typeof readTlsFiles>[0], string, RegExp][] = [
      [{ cert: bad, key: pki.server.key }, bad, /holds no PEM certificate/],
      [{ cert: missing, key: pki.server.key }, missing, /cannot read the TLS certificate file/],
      [{ cert: pki.server.cert, key: bad }, bad, /no usable private key/],
      [{ cert: pki.server.cert, key: pki.client.key }, pki.client.key, /is not the key of the certificate/],
      [{ ca: bad }, bad, /TLS CA file .* holds no PEM certificate/],
      [{ cert: pki.server.cert }, pki.server.cert, /needs its key/],
      [{ key: pki.server.key }, pki.server.key, /needs its certificate/],
    ];
    for (const [files, named, what] of cases) {
      let err: unknown;
      try {
        readTlsFiles(files);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(files)).toBeInstanceOf(OptionsError);
      expect((err as Error).message).toContain(named);
      expect((err as Error).message).toMatch(what);
    }
  });

  it("refuses a certificate that has expired, or is not valid yet, at the time it is read", () => {
    const expired = pki.ca.issue("expired", { ...LOOPBACK_NAMES, validDays: -1 });
    expect(() => readTlsFiles(expired, Date.now())).toThrow(
      new RegExp(`the TLS certificate in ${expired.cert} is not valid now`),
    );
    expect(() => readTlsFiles(pki.server, Date.now() - 86_400_000)).toThrow(/is not valid now/);
    expect(readTlsFiles(pki.server, Date.now()).serial).toBe(pki.server.serial);
  });

  it("refuses a certificate file whose PEM body is damaged", () => {
    const damaged = path.join(pki.ca.dir, "damaged.pem");
    const pem = readTlsFiles({ ca: pki.ca.caFile }).ca!.toString();
    writeFileSync(damaged, pem.replace(/\n[A-Za-z0-9+/]{20}/, "\nAAAAAAAAAAAAAAAAAAAA"));
    expect(() => readTlsFiles({ ca: damaged })).toThrow(new RegExp(`${damaged}.*malformed`));
  });
});

describe("TlsSource", () => {
  it("takes rotated files on its next poll, and keeps the old ones (logging the file) when they are bad", () => {
    const dir = pki.ca.dir;
    const files = { cert: path.join(dir, "rot.pem"), key: path.join(dir, "rot-key.pem"), ca: pki.ca.caFile };
    copyFileSync(pki.server.cert, files.cert);
    copyFileSync(pki.server.key, files.key);
    const clock = new ManualClock(Date.now());
    const log = memoryLog();
    const src = new TlsSource(files, { clock, log, pollMs: 1000 });
    const seen: string[] = [];
    src.onChange((m) => seen.push(m.serial!));
    expect(src.current().serial).toBe(pki.server.serial);

    clock.advance(1000);
    expect(seen).toEqual([]); // unchanged files: nothing happens

    const next = pki.ca.reissue({ ...files, serial: "" }, LOOPBACK_NAMES);
    clock.advance(999);
    expect(seen).toEqual([]);
    clock.advance(1);
    expect(seen).toEqual([next.serial]);
    expect(src.current().serial).toBe(next.serial);

    // A key that is not the certificate's: refused, logged naming the file, the old pair kept.
    copyFileSync(pki.client.key, files.key);
    clock.advance(1000);
    expect(src.current().serial).toBe(next.serial);
    expect(log.errors).toHaveLength(1);
    expect(log.errors[0]).toContain(files.key);
    clock.advance(3000);
    expect(log.errors).toHaveLength(1); // the same problem is logged once

    // Half a certificate file (a write caught midway): refused too.
    writeFileSync(files.cert, "-----BEGIN CERTIFICATE-----\nMIIB\n");
    clock.advance(1000);
    expect(src.current().serial).toBe(next.serial);
    expect(log.errors.at(-1)).toContain(files.cert);

    const last = pki.ca.reissue({ ...files, serial: "" }, LOOPBACK_NAMES);
    clock.advance(1000);
    expect(seen).toEqual([next.serial, last.serial]);
    src.close();
    clock.advance(10_000);
    expect(seen).toHaveLength(2);
  });
});

const WHO = rawMethod("/test.Who/Who");

/**
 * A gRPC server on loopback with TLS on `source`: health, and `Who`, which answers with the
 * serial of the verified certificate the client presented on its connection ("" for none).
 */
async function startWhoServer(source: TlsSource, clientAuth: ClientAuth) {
  const server = new grpc.Server();
  new HealthImplementation({ "": "SERVING" }).addToServer(server);
  server.addService(
    { Who: WHO },
    {
      Who: ((call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        cb(
          null,
          Buffer.from(call.getAuthContext().sslPeerCertificate?.serialNumber ?? ""),
        )) as grpc.handleUnaryCall<Buffer, Buffer>,
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", serverCredentials(source, clientAuth), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, port };
}

/** `Who` on a channel of its own (so a new connection) with these credentials. */
async function who(port: number, sec: ChannelSecurity): Promise<string> {
  const c = new grpc.Client(`127.0.0.1:${port}`, sec.credentials, {
    ...sec.options,
    "grpc.use_local_subchannel_pool": 1,
  });
  try {
    return await new Promise<string>((resolve, reject) =>
      c.makeUnaryRequest<Buffer, Buffer>(
        WHO.path,
        (b) => b,
        (b) => b,
        Buffer.alloc(0),
        (err, res) => (err ? reject(err) : resolve(res!.toString())),
      ),
    );
  } finally {
    c.close();
  }
}

describe("mutual TLS over grpc-js with rotation", () => {
  const clock = new ManualClock(Date.now());
  const log = memoryLog();
  let server: grpc.Server;
  let port: number;
  let serverSource: TlsSource;
  const rotating = () => ({
    cert: path.join(pki.ca.dir, "live.pem"),
    key: path.join(pki.ca.dir, "live-key.pem"),
  });

  beforeAll(async () => {
    const files = rotating();
    copyFileSync(pki.server.cert, files.cert);
    copyFileSync(pki.server.key, files.key);
    serverSource = new TlsSource({ ...files, ca: pki.ca.caFile }, { clock, log });
    ({ server, port } = await startWhoServer(serverSource, "require"));
  });
  afterAll(() => {
    server?.forceShutdown();
    serverSource?.close();
  });

  /** One health check on a fresh channel with these files; the gRPC status code (0 = OK). */
  async function healthCall(files: { cert?: string; key?: string; ca?: string }, serverName?: string) {
    const src = new TlsSource(files, { clock, log });
    const sec = channelSecurity(src, serverName);
    const Client = grpc.makeGenericClientConstructor(
      {
        Check: {
          path: "/grpc.health.v1.Health/Check",
          requestStream: false,
          responseStream: false,
          requestSerialize: () => Buffer.alloc(0),
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      "Health",
    );
    const c = new Client(`127.0.0.1:${port}`, sec.credentials, sec.options);
    try {
      return await new Promise<number>((resolve) =>
        (c as unknown as Record<string, (...a: unknown[]) => void>).Check!(
          Buffer.alloc(0),
          { deadline: Date.now() + 3000 },
          (err: grpc.ServiceError | null) => resolve(err ? err.code : 0),
        ),
      );
    } finally {
      c.close();
      src.close();
    }
  }

  it("a client with a certificate from the CA gets through; without one, or from another CA, it does not", async () => {
    expect(await healthCall({ ...pki.client, ca: pki.ca.caFile })).toBe(0);
    expect(await healthCall({ ca: pki.ca.caFile })).toBe(grpc.status.UNAVAILABLE);
    expect(await healthCall({ ...pki.wrongCaClient, ca: pki.ca.caFile })).toBe(grpc.status.UNAVAILABLE);
    // The client checks the server too: against another CA, or under another name, it refuses.
    expect(await healthCall({ ...pki.client, ca: pki.wrongCa.caFile })).toBe(grpc.status.UNAVAILABLE);
    expect(await healthCall({ ...pki.client, ca: pki.ca.caFile }, "elsewhere.invalid")).toBe(
      grpc.status.UNAVAILABLE,
    );
  });

  it("after the client's files are re-issued, new connections on the same credentials present the new certificate", async () => {
    const files = {
      cert: path.join(pki.ca.dir, "client-live.pem"),
      key: path.join(pki.ca.dir, "client-live-key.pem"),
      ca: pki.ca.caFile,
    };
    copyFileSync(pki.client.cert, files.cert);
    copyFileSync(pki.client.key, files.key);
    const src = new TlsSource(files, { clock, log });
    // One ChannelSecurity for every channel, as a server's peer pool holds it.
    const sec = channelSecurity(src);
    try {
      expect(await who(port, sec)).toBe(pki.client.serial);
      const next = pki.ca.reissue({ ...files, serial: "" }, { commonName: "gateway" });
      expect(src.poll()).toBe(true);
      expect(await who(port, sec)).toBe(next.serial);
    } finally {
      src.close();
    }
  });

  it("after the server's files are re-issued, new handshakes present the new certificate", async () => {
    const tlsOpts = { ca: pki.ca.caFile, cert: pki.client.cert, key: pki.client.key };
    expect(await peerSerial(`127.0.0.1:${port}`, tlsOpts)).toBe(pki.server.serial);
    const files = rotating();
    const next = pki.ca.reissue({ ...files, serial: "" }, LOOPBACK_NAMES);
    expect(await peerSerial(`127.0.0.1:${port}`, tlsOpts)).toBe(pki.server.serial);
    expect(serverSource.poll()).toBe(true);
    expect(await peerSerial(`127.0.0.1:${port}`, tlsOpts)).toBe(next.serial);
    expect(await healthCall({ ...pki.client, ca: pki.ca.caFile })).toBe(0);
  });
});

describe("client auth request", () => {
  const clock = new ManualClock(Date.now());
  const log = memoryLog();
  let server: grpc.Server;
  let port: number;
  let source: TlsSource;
  beforeAll(async () => {
    source = new TlsSource({ ...pki.server, ca: pki.ca.caFile }, { clock, log });
    ({ server, port } = await startWhoServer(source, "request"));
  });
  afterAll(() => {
    server?.forceShutdown();
    source?.close();
  });

  it("lets in clients without a certificate; only one that verifies against the CA gives an identity", async () => {
    const as = async (files: { cert?: string; key?: string }) => {
      const src = new TlsSource({ ...files, ca: pki.ca.caFile }, { clock, log });
      try {
        return await who(port, channelSecurity(src));
      } finally {
        src.close();
      }
    };
    expect(await as({})).toBe("");
    expect(await as(pki.wrongCaClient)).toBe("");
    expect(await as(pki.client)).toBe(pki.client.serial);
  });
});
