import { generateKeyPairSync, randomBytes } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import forge from "node-forge";
import { tempDir } from "./temp-dir.js";

/**
 * Certificates for tests, made in process with node-forge (RSA keys from node:crypto): a CA,
 * leaf certificates with subject alternative names, and re-issue in place (rotation). Nothing
 * here is for production: keys are unencrypted files in a temp dir.
 */

export interface LeafOptions {
  /** DNS names (SAN type 2). */
  dns?: readonly string[];
  /** IP addresses (SAN type 7). */
  ips?: readonly string[];
  /** URIs, e.g. spiffe://cluster/ns/x/sa/y (SAN type 6). */
  uris?: readonly string[];
  /** Subject common name (default: the first DNS name, or "leaf"). */
  commonName?: string;
  /** Days from now the certificate expires (negative: already expired). Default 30. */
  validDays?: number;
}

export interface IssuedCert {
  /** Path of the PEM certificate. */
  readonly cert: string;
  /** Path of the PEM private key (PKCS#8). */
  readonly key: string;
  /** Serial number, upper-case hex as node:tls's getPeerCertificate().serialNumber reports it. */
  readonly serial: string;
}

export interface TestCa {
  readonly dir: string;
  /** Path of the CA's PEM certificate (the trust bundle to pass as --tls-ca). */
  readonly caFile: string;
  /** A leaf signed by this CA (server and client use both), written as `<name>.pem` / `<name>-key.pem`. */
  issue(name: string, opts: LeafOptions): IssuedCert;
  /**
   * Re-issues `into`'s certificate in place with a new key and serial (same names), the way a
   * secret rotates: each file is written aside and renamed over the old, key first.
   */
  reissue(into: IssuedCert, opts: LeafOptions): IssuedCert;
}

function rsaKey(): { privatePem: string; publicKey: forge.pki.PublicKey } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKey: forge.pki.publicKeyFromPem(publicKey.export({ type: "spki", format: "pem" }).toString()),
  };
}

/** A positive serial (high bit clear), 16 bytes, as hex. */
function newSerial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f || 0x01;
  return b.toString("hex").toUpperCase();
}

function validity(cert: forge.pki.Certificate, days: number): void {
  const now = Date.now();
  const a = new Date(now - 60_000);
  const b = new Date(now + days * 86_400_000);
  cert.validity.notBefore = days >= 0 ? a : new Date(b.getTime() - 86_400_000);
  cert.validity.notAfter = b;
}

function sans(o: LeafOptions): { type: number; value?: string; ip?: string }[] {
  return [
    ...(o.dns ?? []).map((value) => ({ type: 2, value })),
    ...(o.ips ?? []).map((ip) => ({ type: 7, ip })),
    ...(o.uris ?? []).map((value) => ({ type: 6, value })),
  ];
}

/** Writes `text` beside `file` and renames it over `file`: a reader sees the old or the new. */
function replaceFile(file: string, text: string): void {
  const aside = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(aside, text, { mode: 0o600 });
  renameSync(aside, file);
}

/** A new CA (self-signed) in `dir` (a fresh temp dir by default). */
export function makeCa(name = "shardlimit test CA", dir?: string): TestCa {
  const where = dir ?? tempDir("shardlimit-certs-");
  const caKey = rsaKey();
  const caCert = forge.pki.createCertificate();
  caCert.publicKey = caKey.publicKey;
  caCert.serialNumber = newSerial();
  validity(caCert, 365);
  const subject = [{ name: "commonName", value: name }];
  caCert.setSubject(subject);
  caCert.setIssuer(subject);
  caCert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  const caPrivate = forge.pki.privateKeyFromPem(caKey.privatePem);
  caCert.sign(caPrivate, forge.md.sha256.create());
  const fileBase = name.replace(/[^A-Za-z0-9]+/g, "-").toLowerCase();
  const caFile = path.join(where, `${fileBase}.pem`);
  writeFileSync(caFile, forge.pki.certificateToPem(caCert));

  const make = (opts: LeafOptions): { certPem: string; keyPem: string; serial: string } => {
    const k = rsaKey();
    const c = forge.pki.createCertificate();
    c.publicKey = k.publicKey;
    const serial = newSerial();
    c.serialNumber = serial;
    validity(c, opts.validDays ?? 30);
    c.setSubject([{ name: "commonName", value: opts.commonName ?? opts.dns?.[0] ?? "leaf" }]);
    c.setIssuer(caCert.subject.attributes);
    c.setExtensions([
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", serverAuth: true, clientAuth: true },
      { name: "subjectAltName", altNames: sans(opts) },
      { name: "authorityKeyIdentifier", keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    c.sign(caPrivate, forge.md.sha256.create());
    return { certPem: forge.pki.certificateToPem(c), keyPem: k.privatePem, serial };
  };

  return {
    dir: where,
    caFile,
    issue(leafName, opts) {
      const { certPem, keyPem, serial } = make(opts);
      const cert = path.join(where, `${leafName}.pem`);
      const key = path.join(where, `${leafName}-key.pem`);
      writeFileSync(key, keyPem, { mode: 0o600 });
      writeFileSync(cert, certPem);
      return { cert, key, serial };
    },
    reissue(into, opts) {
      const { certPem, keyPem, serial } = make(opts);
      replaceFile(into.key, keyPem);
      replaceFile(into.cert, certPem);
      return { cert: into.cert, key: into.key, serial };
    },
  };
}

/** What a server on loopback is reached by: its certificate's names. */
export const LOOPBACK_NAMES: LeafOptions = { dns: ["localhost"], ips: ["127.0.0.1"] };

export interface TestPki {
  readonly ca: TestCa;
  /** A server certificate for 127.0.0.1 / localhost, with a SPIFFE id. */
  readonly server: IssuedCert;
  /** A client certificate with a SPIFFE id. */
  readonly client: IssuedCert;
  /** From the right CA, but for a name nobody dials (server-name check fails). */
  readonly wrongName: IssuedCert;
  /** Another CA and a loopback certificate from it (verification fails). */
  readonly wrongCa: TestCa;
  readonly wrongCaServer: IssuedCert;
  readonly wrongCaClient: IssuedCert;
}

/** The usual set for tests, in one fresh temp dir. */
export function makeTestPki(): TestPki {
  const ca = makeCa("shardlimit test CA");
  const wrongCa = makeCa("another CA", ca.dir);
  return {
    ca,
    server: ca.issue("server", { ...LOOPBACK_NAMES, uris: ["spiffe://shardlimit.test/server"] }),
    client: ca.issue("client", { commonName: "gateway", uris: ["spiffe://shardlimit.test/gateway"] }),
    wrongName: ca.issue("wrong-name", { dns: ["elsewhere.invalid"] }),
    wrongCa,
    wrongCaServer: wrongCa.issue("wrong-ca-server", LOOPBACK_NAMES),
    wrongCaClient: wrongCa.issue("wrong-ca-client", { commonName: "intruder" }),
  };
}
