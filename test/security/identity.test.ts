import { describe, expect, it } from "vitest";
import {
  bearerToken,
  callViewOf,
  certificateNames,
  IdentityError,
  identify,
  type MetadataLike,
  sha256,
} from "../../src/security/identity.js";

/** Metadata with the given `authorization` values. */
const md = (...auth: string[]): MetadataLike => ({ get: (k) => (k === "authorization" ? auth : []) });
const TOKENS = new Map([
  ["gw-a", sha256("secret-a")],
  ["gw-b", sha256("secret-b")],
]);

describe("certificate identities", () => {
  it("take URI SANs (SPIFFE ids) first, then DNS SANs, and ignore other kinds", () => {
    expect(
      certificateNames({
        subjectaltname: "DNS:gw.example.com, IP Address:10.0.0.1, URI:spiffe://prod/ns/gw/sa/checkout",
      }),
    ).toEqual(["spiffe://prod/ns/gw/sa/checkout", "gw.example.com"]);
  });

  it("read a quoted SAN holding a comma as one name", () => {
    expect(certificateNames({ subjectaltname: 'URI:"spiffe://t/a,b", DNS:x' })).toEqual([
      "spiffe://t/a,b",
      "x",
    ]);
  });

  it("fall back to the subject CN when there is no SAN", () => {
    expect(certificateNames({ subject: { CN: "legacy-client" } })).toEqual(["legacy-client"]);
    expect(certificateNames({})).toEqual([]);
  });

  it("win over a token: the channel proved them", () => {
    const id = identify(
      { certificate: { subjectaltname: "URI:spiffe://p/x" }, metadata: md("Bearer secret-a") },
      TOKENS,
    );
    expect(id).toEqual({ name: "spiffe://p/x", via: "certificate", names: ["spiffe://p/x"] });
  });

  it("come from a grpc-js call's auth context; an empty certificate (none sent) is none", () => {
    const call = (cert: object | undefined) => ({
      metadata: md(),
      getAuthContext: () => ({ sslPeerCertificate: cert as never }),
    });
    expect(callViewOf(call({ subjectaltname: "DNS:a" })).certificate).toEqual({ subjectaltname: "DNS:a" });
    expect(callViewOf(call({})).certificate).toBeUndefined();
    expect(callViewOf(call(undefined)).certificate).toBeUndefined();
    expect(callViewOf({ metadata: md() }).certificate).toBeUndefined();
  });
});

describe("token identities", () => {
  it("name the identity whose SHA-256 the token has", () => {
    expect(identify({ metadata: md("Bearer secret-b") }, TOKENS)).toEqual({
      name: "gw-b",
      via: "token",
      names: ["gw-b"],
    });
    expect(identify({ metadata: md("bearer   secret-a") }, TOKENS).name).toBe("gw-a");
  });

  it("no certificate and no token: anonymous", () => {
    expect(identify({ metadata: md() }, TOKENS)).toMatchObject({ name: "anonymous", via: "anonymous" });
  });

  it("refuse a token that matches none, a malformed header, and two headers, saying which", () => {
    expect(() => identify({ metadata: md("Bearer wrong") }, TOKENS)).toThrow(
      /bearer token matches no identity/,
    );
    expect(() => bearerToken(md("Basic dXNlcg=="))).toThrow(IdentityError);
    expect(() => bearerToken(md("Basic dXNlcg=="))).toThrow(/not "Bearer <token>"/);
    expect(() => bearerToken(md("Bearer a", "Bearer b"))).toThrow(/more than one authorization header/);
  });
});
