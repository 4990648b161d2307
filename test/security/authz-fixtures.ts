import { writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { sha256 } from "../../src/security/identity.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/** Shared by the authorisation tests: a two-domain config, tokens, the auth file, token clients. */

export const AUTHZ_CONFIG = `domain: shop
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: conn
    rate_limit: {unit: second, requests_per_unit: 5, algorithm: concurrency}
---
domain: bank
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 100}
`;

export const TOKENS = {
  "gw-shop": "t-shop",
  "gw-shop2": "t-shop2",
  "gw-bank": "t-bank",
  ops: "t-ops",
  peek: "t-peek",
};

export function authFileText(extra = ""): string {
  const digests = Object.entries(TOKENS)
    .map(([name, t]) => `  ${name}: ${sha256(t).toString("hex")}`)
    .join("\n");
  return `tokens:
${digests}
gateways:
  - {identity: gw-shop, domains: [shop]}
  - {identity: gw-shop2, domains: [shop]}
  - {identity: gw-bank, domains: [bank]}
  - {identity: peek, domains: ["sh*"], may: [limits]}
operators:
  - {identity: ops}
${extra}`;
}

export function writeAuth(text: string): string {
  const file = path.join(tempDir("shardlimit-authz-"), "auth.yaml");
  writeFileSync(file, text);
  return file;
}

/** A client of the server at `grpcPort` sending `token` (none: anonymous). */
export function tokenClient(grpcPort: number, token?: string): RateLimiterRpc {
  return connect(`127.0.0.1:${grpcPort}`, {}, undefined, undefined, () => {
    const m = new grpc.Metadata();
    if (token !== undefined) m.set("authorization", `Bearer ${token}`);
    return m;
  });
}
