import { createHash, timingSafeEqual } from "node:crypto";
import { ANONYMOUS } from "./auth-file.js";

/**
 * Who is calling: from the client certificate when the connection is mTLS (its URI SANs, such as
 * SPIFFE ids, and DNS SANs), else from a bearer token (`authorization: Bearer <token>`), else
 * "anonymous". The check sees a call through the narrow `CallView`, so unit tests pass fakes.
 */

/** The part of `tls.PeerCertificate` an identity is read from. */
export interface PeerCertificateLike {
  readonly subjectaltname?: string;
  readonly subject?: { readonly CN?: string | string[] };
}

export interface MetadataLike {
  get(key: string): readonly (string | Buffer)[];
}

export interface CallView {
  readonly certificate?: PeerCertificateLike;
  readonly metadata: MetadataLike;
}

export interface Identity {
  /** The name the authorisation file matches: a URI SAN, a DNS SAN, a token name, or "anonymous". */
  readonly name: string;
  readonly via: "certificate" | "token" | "anonymous";
  /** Every name the caller proved (a certificate may carry several SANs); `name` is the first. */
  readonly names: readonly string[];
}

export const ANONYMOUS_IDENTITY: Identity = { name: ANONYMOUS, via: "anonymous", names: [ANONYMOUS] };

/** Why a call has no identity although it tried to present one. */
export class IdentityError extends Error {}

/**
 * The names of a certificate: URI SANs first (SPIFFE ids), then DNS SANs, then the subject's CN
 * when it has no SAN of either kind.
 */
export function certificateNames(cert: PeerCertificateLike): string[] {
  const uris: string[] = [];
  const dns: string[] = [];
  for (const part of splitSans(cert.subjectaltname ?? "")) {
    const colon = part.indexOf(":");
    if (colon < 0) continue;
    const kind = part.slice(0, colon).trim();
    const value = part.slice(colon + 1).trim();
    if (value === "") continue;
    if (kind === "URI") uris.push(value);
    else if (kind === "DNS") dns.push(value);
  }
  const names = [...uris, ...dns];
  if (names.length === 0) {
    const cn = cert.subject?.CN;
    const first = Array.isArray(cn) ? cn[0] : cn;
    if (first) names.push(first);
  }
  return names;
}

/**
 * Node joins SANs with ", " and quotes a value holding a comma (`URI:"a,b"`, JSON-escaped), so a
 * plain split on commas would cut such a name in two.
 */
function splitSans(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    while (s[i] === " " || s[i] === ",") i++;
    if (i >= s.length) break;
    const colon = s.indexOf(":", i);
    if (colon >= 0 && s[colon + 1] === '"') {
      let j = colon + 2;
      while (j < s.length && s[j] !== '"') j += s[j] === "\\" ? 2 : 1;
      try {
        out.push(`${s.slice(i, colon + 1)}${JSON.parse(s.slice(colon + 1, j + 1)) as string}`);
      } catch {
        out.push(s.slice(i, j + 1));
      }
      i = j + 1;
      continue;
    }
    const comma = s.indexOf(",", i);
    const end = comma < 0 ? s.length : comma;
    out.push(s.slice(i, end));
    i = end;
  }
  return out;
}

/** The bearer token of a call; undefined when it sent none. Throws on a malformed header. */
export function bearerToken(metadata: MetadataLike): string | undefined {
  const values = metadata.get("authorization");
  if (values.length === 0) return undefined;
  if (values.length > 1) throw new IdentityError("the call has more than one authorization header");
  const v = String(values[0]);
  const m = /^Bearer +(\S+)\s*$/i.exec(v);
  if (!m) throw new IdentityError('the authorization header is not "Bearer <token>"');
  return m[1]!;
}

export function sha256(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/**
 * The caller of a call. A certificate wins over a token (the channel proved it); a token must be
 * one of `tokens` (identity name -> SHA-256 of its token), compared in constant time; neither:
 * anonymous. A token that matches none throws: the caller meant to be someone, and is told.
 */
export function identify(view: CallView, tokens: ReadonlyMap<string, Buffer>): Identity {
  if (view.certificate !== undefined) {
    const names = certificateNames(view.certificate);
    if (names.length > 0) return { name: names[0]!, via: "certificate", names };
  }
  const token = bearerToken(view.metadata);
  if (token === undefined) return ANONYMOUS_IDENTITY;
  const digest = sha256(token);
  let found: string | undefined;
  // Every entry is compared, so the time taken does not tell which one matched.
  for (const [name, want] of tokens) {
    if (timingSafeEqual(digest, want) && found === undefined) found = name;
  }
  if (found === undefined) throw new IdentityError("the bearer token matches no identity in the auth file");
  return { name: found, via: "token", names: [found] };
}

/** The `CallView` of a grpc-js server call: its peer certificate (mTLS) and its metadata. */
export function callViewOf(call: {
  metadata: MetadataLike;
  getAuthContext?: () => { sslPeerCertificate?: PeerCertificateLike } | undefined;
}): CallView {
  const cert = call.getAuthContext?.()?.sslPeerCertificate;
  // Node hands an empty object when the client sent no certificate.
  const certificate = cert && (cert.subjectaltname || cert.subject) ? cert : undefined;
  return certificate ? { certificate, metadata: call.metadata } : { metadata: call.metadata };
}
