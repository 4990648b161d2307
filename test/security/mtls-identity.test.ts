import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectPeer } from "../../src/cluster/peers.js";
import { systemClock } from "../../src/core/clock.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { type ClientTls, clientTls } from "../../src/security/tls.js";
import { type IssuedCert, makeTestPki, type TestPki } from "../../src/testkit/certs.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, writeConfig } from "../../src/testkit/serve.js";
import { AUTHZ_CONFIG, writeAuth } from "./authz-fixtures.js";

/**
 * Identities from client certificates over real mutual TLS (the authorisation tests elsewhere use
 * bearer tokens): one `shardlimit serve` with `--tls-client-auth require` and an auth file that
 * (a lone cluster member on a real etcd, so it serves the peer service)
 * grants roles to certificate SANs. A gateway certificate may check its own domain only, may not
 * call the peer service nor settle another gateway's ticket; refusals change nothing.
 */

const GW_SHOP = "spiffe://shardlimit.test/gw/shop";
const GW_SHOP2 = "spiffe://shardlimit.test/gw/shop2";
const OPS = "spiffe://shardlimit.test/ops";

let pki: TestPki;
let etcd: EtcdProcess;
let server: ServerProcess;
const certs: Record<string, IssuedCert> = {};
const channels: ClientTls[] = [];
const clients: Record<string, RateLimiterRpc> = {};

function clientFor(name: string): RateLimiterRpc {
  const c = certs[name]!;
  const sec = clientTls(
    { ca: pki.ca.caFile, cert: c.cert, key: c.key },
    { clock: systemClock, log: { info: () => {}, error: () => {} } },
  );
  channels.push(sec);
  return connect(server.address, sec.options, undefined, sec.credentials);
}

beforeAll(async () => {
  ensureBuilt();
  pki = makeTestPki();
  certs.shop = pki.ca.issue("gw-shop", { commonName: "shop", uris: [GW_SHOP] });
  certs.shop2 = pki.ca.issue("gw-shop2", { commonName: "shop2", uris: [GW_SHOP2] });
  certs.ops = pki.ca.issue("ops", { commonName: "ops", uris: [OPS] });
  const auth = writeAuth(`gateways:
  - {identity: "${GW_SHOP}", domains: [shop]}
  - {identity: "${GW_SHOP2}", domains: [shop]}
operators:
  - {identity: "${OPS}"}
`);
  etcd = await startEtcd();
  server = await serverProcess({
    id: "mtls-authz",
    configPath: writeConfig(AUTHZ_CONFIG),
    cli: "built",
    extraArgs: [
      ...["--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-ca", pki.ca.caFile],
      ...["--tls-client-auth", "require", "--auth-file", auth],
      ...["--etcd", etcd.url, "--id", "m1", "--lease-ttl", "2"],
    ],
  });
  await server.start();
  for (const name of ["shop", "shop2", "ops"]) clients[name] = clientFor(name);
}, 60_000);

afterAll(async () => {
  for (const c of Object.values(clients)) c.close();
  for (const s of channels) s.source.close();
  await server?.stop();
  await etcd?.destroy();
  await killAllCli();
});

/** What is left of `key` after one more unit: the operator's probe (a Check) takes one itself. */
async function left(key: string): Promise<number> {
  const r = await clients.ops!.check({ items: [{ key, cost: 0 }] }, { deadlineMs: 3000 });
  return r.results[0]!.remaining!;
}

async function refusal(p: Promise<unknown>): Promise<grpc.ServiceError> {
  const err = await p.then(
    () => undefined,
    (e: grpc.ServiceError) => e,
  );
  expect(err, "the call was refused").toBeDefined();
  return err!;
}

describe("identities from client certificates (mTLS) under an auth file", () => {
  it("a gateway certificate checks its own domain, and another domain is refused naming it", async () => {
    const r = await clients.shop!.check({ items: [{ key: "shop/user=a", cost: 1 }] }, { deadlineMs: 3000 });
    expect(r.results[0]).toMatchObject({ allowed: true, remaining: 99 });
    const before = await left("bank/user=a");
    const err = await refusal(
      clients.shop!.check({ items: [{ key: "bank/user=a", cost: 5 }] }, { deadlineMs: 3000 }),
    );
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toContain(GW_SHOP);
    expect(err.details).toContain("bank");
    expect(await left("bank/user=a")).toBe(before - 1); // the probe's own unit, nothing more
  });

  it("a gateway certificate may not call the peer service", async () => {
    const c = certs.shop!;
    const sec = clientTls(
      { ca: pki.ca.caFile, cert: c.cert, key: c.key },
      { clock: systemClock, log: { info: () => {}, error: () => {} } },
    );
    channels.push(sec);
    const peer = connectPeer(server.address, systemClock, undefined, sec);
    try {
      const before = await left("shop/user=p");
      const err = await refusal(
        peer.forward(
          {
            generation: 0,
            envoy: [],
            checks: [{ items: [{ key: "shop/user=p", cost: 50 }], atomic: false, generation: 0 }],
          },
          { deadlineMs: 3000 },
        ),
      );
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(err.details).toContain("Forward");
      expect(err.details).toContain(GW_SHOP);
      expect(await left("shop/user=p")).toBe(before - 1);
    } finally {
      peer.close();
    }
  });

  it("only the certificate that took a ticket may settle it", async () => {
    const res = await clients.shop!.check(
      { items: [{ key: "shop/user=t", cost: 10, ticket: true }] },
      { deadlineMs: 3000 },
    );
    const ticketId = res.results[0]!.ticketId!;
    expect(ticketId).not.toBe("");
    const before = await left("shop/user=t");
    const other = await clients.shop2!.settle(
      { key: "shop/user=t", ticketId, actual: [0] },
      { deadlineMs: 3000 },
    );
    expect(other.error?.message).toContain(GW_SHOP2);
    expect(await left("shop/user=t")).toBe(before - 1); // no refund to the wrong taker
    const own = await clients.shop!.settle(
      { key: "shop/user=t", ticketId, actual: [0] },
      { deadlineMs: 3000 },
    );
    expect(own.error?.code ?? 0).toBe(0);
    expect(await left("shop/user=t")).toBe(before - 1 + 10 - 1);
  });
});
