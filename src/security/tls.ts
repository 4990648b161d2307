import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext, rootCertificates } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { type Clock, every, type Timer } from "../core/clock.js";
import { OptionsError } from "../core/errors.js";

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaCertificateUpdateListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityCertificateUpdateListener = grpc.experimental.IdentityCertificateUpdateListener;

/**
 * TLS for every gRPC link: PEM files loaded and checked at start, re-read when they change
 * (rotation without a restart), and grpc-js credentials built on them. grpc-js's own
 * FileWatcherCertificateProvider re-reads files too, but it hands over whatever it read (a key
 * that does not match its certificate, half a file) and reads on its own timers; here a
 * rotation is checked like the first load and, if bad, refused with the old files kept.
 */

/** Paths of the PEM files of one side of a link. */
export interface TlsFiles {
  /** This side's certificate (chain). With `key`: presented to the other side. */
  cert?: string;
  key?: string;
  /** The CA bundle the other side's certificate is verified against (default: the system roots). */
  ca?: string;
}

/** What a server asks of its clients' certificates. `require` is mutual TLS. */
export type ClientAuth = "none" | "request" | "require";
export const CLIENT_AUTH_MODES: readonly ClientAuth[] = ["none", "request", "require"];

/** How often the files are looked at by default. */
export const DEFAULT_TLS_POLL_MS = 5000;

export interface TlsLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** The checked contents of a `TlsFiles`. */
export interface TlsMaterial {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
  /** The serial number of `cert` (hex), for logs. */
  serial?: string;
  /** When `cert` expires (its notAfter), for logs. */
  validTo?: string;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new OptionsError(`cannot read the ${what} file ${path}: ${(err as Error).message}`);
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate in a PEM bundle, parsed; at least one. */
function parseCerts(pem: Buffer, path: string, what: string): X509Certificate[] {
  const blocks = pem.toString("utf8").match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new OptionsError(`the ${what} file ${path} holds no PEM certificate`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new OptionsError(
        `the ${what} file ${path}: certificate ${i + 1} is malformed (${(err as Error).message})`,
      );
    }
  });
}

/**
 * Reads and checks `files`: each file readable and well-formed, the key the certificate's, the
 * certificate valid at `now` (when given), and the three usable together by node:tls. Throws an
 * OptionsError naming the file otherwise.
 */
export function readTlsFiles(files: TlsFiles, now?: number): TlsMaterial {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new OptionsError(
      files.cert === undefined
        ? `a TLS key (${files.key}) needs its certificate`
        : `a TLS certificate (${files.cert}) needs its key`,
    );
  }
  const out: TlsMaterial = {};
  if (files.cert !== undefined && files.key !== undefined) {
    const cert = readPem(files.cert, "TLS certificate");
    const leaf = parseCerts(cert, files.cert, "TLS certificate")[0]!;
    const key = readPem(files.key, "TLS key");
    let privateKey: ReturnType<typeof createPrivateKey>;
    try {
      privateKey = createPrivateKey(key);
    } catch (err) {
      throw new OptionsError(
        `the TLS key file ${files.key} holds no usable private key (${(err as Error).message})`,
      );
    }
    if (!leaf.checkPrivateKey(privateKey)) {
      throw new OptionsError(
        `the TLS key file ${files.key} is not the key of the certificate in ${files.cert}`,
      );
    }
    if (now !== undefined && !(now >= Date.parse(leaf.validFrom) && now <= Date.parse(leaf.validTo))) {
      throw new OptionsError(
        `the TLS certificate in ${files.cert} is not valid now (valid from ${leaf.validFrom} to ${leaf.validTo})`,
      );
    }
    Object.assign(out, { cert, key, serial: leaf.serialNumber, validTo: leaf.validTo });
  }
  if (files.ca !== undefined) {
    out.ca = readPem(files.ca, "TLS CA");
    parseCerts(out.ca, files.ca, "TLS CA");
  }
  try {
    createSecureContext({ cert: out.cert, key: out.key, ca: out.ca });
  } catch (err) {
    const names = [files.cert, files.key, files.ca].filter((f) => f !== undefined).join(", ");
    throw new OptionsError(`the TLS files ${names} are not usable together: ${(err as Error).message}`);
  }
  return out;
}

function same(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.equals(b));
}

const SYSTEM_ROOTS = Buffer.from(rootCertificates.join("\n"));

/**
 * The files of one side of a link, loaded and checked at once (an OptionsError naming the file
 * if they are bad), then looked at every `pollMs` on `clock`. Changed files that pass the same
 * checks replace the old ones: grpc-js is told (it is a CertificateProvider), so new handshakes,
 * accepted or made, use them while connections already open keep theirs. Changed files that do
 * not pass are logged, naming the file, and the old ones stay in use.
 */
export class TlsSource implements CertificateProvider {
  private material: TlsMaterial;
  private readonly caListeners = new Set<CaCertificateUpdateListener>();
  private readonly identityListeners = new Set<IdentityCertificateUpdateListener>();
  private readonly changeListeners = new Set<(m: TlsMaterial) => void>();
  private readonly timer: Timer;
  /** The message of the last refused rotation, so one bad file is logged once, not every poll. */
  private lastError: string | undefined;

  constructor(
    readonly files: TlsFiles,
    private readonly deps: { clock: Clock; log: TlsLog; pollMs?: number },
  ) {
    this.material = readTlsFiles(files, deps.clock.now());
    this.timer = every(deps.clock, deps.pollMs ?? DEFAULT_TLS_POLL_MS, () => this.poll());
  }

  /** What is in use now. */
  current(): TlsMaterial {
    return this.material;
  }

  /** Whether this side presents a certificate. */
  get hasIdentity(): boolean {
    return this.material.cert !== undefined;
  }

  /** Called after each accepted rotation. */
  onChange(fn: (m: TlsMaterial) => void): void {
    this.changeListeners.add(fn);
  }

  /** Looks at the files now (the timer does this every `pollMs`). True if new files were taken. */
  poll(): boolean {
    let next: TlsMaterial;
    try {
      next = readTlsFiles(this.files, this.deps.clock.now());
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) {
        this.deps.log.error(
          { err: message, files: this.files, serial: this.material.serial },
          "TLS files cannot be used (changed badly, or the certificate expired); the ones loaded before stay in use",
        );
      }
      this.lastError = message;
      return false;
    }
    this.lastError = undefined;
    const m = this.material;
    if (same(m.cert, next.cert) && same(m.key, next.key) && same(m.ca, next.ca)) return false;
    this.material = next;
    this.deps.log.info(
      { files: this.files, serial: next.serial, previousSerial: m.serial, validTo: next.validTo },
      "TLS files reloaded: new connections use them",
    );
    for (const l of this.caListeners) l(this.caUpdate());
    for (const l of this.identityListeners) l(this.identityUpdate());
    for (const l of this.changeListeners) l(next);
    return true;
  }

  close(): void {
    this.timer.cancel();
  }

  private caUpdate() {
    return { caCertificate: this.material.ca ?? SYSTEM_ROOTS };
  }

  private identityUpdate() {
    const { cert, key } = this.material;
    return cert && key ? { certificate: cert, privateKey: key } : null;
  }

  // CertificateProvider (grpc-js). The first update goes out on the next tick, as grpc-js's own
  // providers do: its server credentials add their listener before the server's watcher, and an
  // update delivered inside that call would be lost.
  addCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    process.nextTick(() => {
      if (this.caListeners.has(listener)) listener(this.caUpdate());
    });
  }
  removeCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    process.nextTick(() => {
      if (this.identityListeners.has(listener)) listener(this.identityUpdate());
    });
  }
  removeIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }
}

/** A server's TLS: its files, what it asks of clients, and the name its peers' certificates carry. */
export interface ServerTlsOptions {
  cert: string;
  key: string;
  /** Verifies client certificates (`clientAuth` request/require) and, in a cluster, the peers'. */
  ca?: string;
  clientAuth: ClientAuth;
  /**
   * The name peers' certificates are checked for when this server dials them; default: the host
   * of each peer's advertised address.
   */
  peerServerName?: string;
  /** How often the files are looked at (default DEFAULT_TLS_POLL_MS). */
  pollMs?: number;
}

/** A server's TLS made ready: the listener's credentials and, for dialling peers, the channel's. */
export interface ServerTls {
  source: TlsSource;
  server: grpc.ServerCredentials;
  peers: ChannelSecurity;
}

/** Loads `o`'s files (an OptionsError naming a bad one) and builds both sides' credentials. */
export function serverTls(o: ServerTlsOptions, deps: { clock: Clock; log: TlsLog }): ServerTls {
  const source = new TlsSource({ cert: o.cert, key: o.key, ca: o.ca }, { ...deps, pollMs: o.pollMs });
  try {
    return {
      source,
      server: serverCredentials(source, o.clientAuth),
      peers: channelSecurity(source, o.peerServerName),
    };
  } catch (err) {
    source.close();
    throw err;
  }
}

/**
 * Server credentials on `source` (which must hold a certificate and key). `request` asks clients
 * for a certificate but lets them in without one, or with one that does not verify (grpc-js then
 * gives the call no peer certificate in its auth context: no identity); `require` refuses a
 * client without a valid one.
 */
export function serverCredentials(source: TlsSource, clientAuth: ClientAuth): grpc.ServerCredentials {
  if (!source.hasIdentity) throw new OptionsError("a TLS server needs a certificate and its key");
  if (clientAuth !== "none" && source.files.ca === undefined) {
    throw new OptionsError(`client auth "${clientAuth}" needs a CA to verify client certificates against`);
  }
  // grpc-js's signature names its first parameter after the CA, but it is the identity's provider.
  return grpc.experimental.createCertificateProviderServerCredentials(
    source,
    clientAuth === "none" ? null : source,
    clientAuth === "require",
  );
}

/** A channel's credentials and the options that go with them (the expected server name). */
export interface ChannelSecurity {
  credentials: grpc.ChannelCredentials;
  /** Merged into a channel's options (`grpc.ssl_target_name_override` when a name is set). */
  options: grpc.ChannelOptions;
}

/**
 * Channel credentials on `source`: the server is verified against its CA (the system roots
 * without one), this side's certificate, if any, presented. The server's name is checked
 * against the dialled host, or against `serverName` when given (servers sharing one name).
 */
export function channelSecurity(source: TlsSource, serverName?: string): ChannelSecurity {
  return {
    credentials: grpc.experimental.createCertificateProviderChannelCredentials(
      source,
      source.hasIdentity ? source : null,
    ),
    options: serverName !== undefined ? { "grpc.ssl_target_name_override": serverName } : {},
  };
}

/** TLS towards servers (gateway client, sidecar): PEM file paths, re-read when they change. */
export interface ClientTlsOptions {
  /** The CA bundle the servers' certificates are verified against. */
  ca: string;
  /** A client certificate and its key, for servers that ask for one (mutual TLS). */
  cert?: string;
  key?: string;
  /** The name the servers' certificates must carry; default: the host dialled. */
  serverName?: string;
  /** How often the files are looked at (default DEFAULT_TLS_POLL_MS). */
  pollMs?: number;
}

/** A dialler's TLS made ready: the files (close it when done) and the channel's credentials. */
export interface ClientTls extends ChannelSecurity {
  source: TlsSource;
}

/** Loads `o`'s files (an OptionsError naming a bad one) and builds the channel's credentials. */
export function clientTls(o: ClientTlsOptions, deps: { clock: Clock; log: TlsLog }): ClientTls {
  const source = new TlsSource({ ca: o.ca, cert: o.cert, key: o.key }, { ...deps, pollMs: o.pollMs });
  return { source, ...channelSecurity(source, o.serverName) };
}

/** Plaintext: what every link used before TLS, and still the default. */
export const INSECURE_CHANNEL: ChannelSecurity = {
  credentials: grpc.credentials.createInsecure(),
  options: {},
};
