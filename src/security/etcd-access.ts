import { readFileSync } from "node:fs";
import { systemClock } from "../core/clock.js";
import { OptionsError } from "../core/errors.js";
import { readTlsFiles } from "./tls.js";

/**
 * How a command reaches etcd: TLS (its CA, and a client certificate for etcd's
 * --client-cert-auth) and etcd's user/password auth. Files only: a password given as a flag's
 * value would show in `ps`.
 */
export interface EtcdAccessFiles {
  ca?: string;
  cert?: string;
  key?: string;
  /** A file holding `username:password` (one line). */
  authFile?: string;
}

/** What etcd3's client takes (`credentials`, `auth`), read and checked. */
export interface EtcdAccess {
  credentials?: { rootCertificate: Buffer; certChain?: Buffer; privateKey?: Buffer };
  auth?: { username: string; password: string };
}

/** Reads `username:password` from `file`; an OptionsError naming the file if it is not that. */
export function readEtcdAuthFile(file: string): { username: string; password: string } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new OptionsError(`cannot read the etcd auth file ${file}: ${(err as Error).message}`);
  }
  const line = text.replace(/\r?\n$/, "");
  const colon = line.indexOf(":");
  if (line.includes("\n") || colon <= 0 || colon === line.length - 1) {
    throw new OptionsError(
      `the etcd auth file ${file} must hold one line username:password (neither part empty)`,
    );
  }
  return { username: line.slice(0, colon), password: line.slice(colon + 1) };
}

/**
 * Reads the files of `f` (each checked like the gRPC links' files; errors name the file and
 * the flag's meaning). Certificate and key without a CA is refused: etcd's own certificate
 * would then be checked against the system roots, which a cluster's private CA is not in.
 * The files are read once: etcd's client keeps its credentials for its lifetime.
 */
export function readEtcdAccess(f: EtcdAccessFiles, urls: readonly string[]): EtcdAccess {
  const out: EtcdAccess = {};
  if (f.cert !== undefined || f.key !== undefined || f.ca !== undefined) {
    if (f.ca === undefined) throw new OptionsError("--etcd-cert and --etcd-key need --etcd-ca");
    const plain = urls.filter((u) => !u.startsWith("https://"));
    if (plain.length > 0) {
      throw new OptionsError(
        `--etcd-ca is given but --etcd names plaintext URLs (${plain.join(", ")}): use https://`,
      );
    }
    const m = readTlsFiles({ ca: f.ca, cert: f.cert, key: f.key }, systemClock.now());
    out.credentials = { rootCertificate: m.ca!, certChain: m.cert, privateKey: m.key };
  }
  if (f.authFile !== undefined) out.auth = readEtcdAuthFile(f.authFile);
  return out;
}
