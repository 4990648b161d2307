import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEtcd } from "../../src/cluster/etcd-client.js";
import { systemClock } from "../../src/core/clock.js";
import { connect } from "../../src/protocol/rpc.js";
import { clientTls } from "../../src/security/tls.js";
import { killAllCli, runCli, spawnCli } from "../../src/testkit/cli.js";
import { peerSerial } from "../../src/testkit/tls.js";
import { waitFor } from "../../src/testkit/wait.js";
import {
  CLUSTER_CONFIG,
  CLUSTER_KEYS,
  countsExactlyAcross,
  sigkillHeals,
  sigtermMovesCounts,
} from "./cluster-cases.js";
import { type ClusterHarness, startClusterHarness } from "./cluster-harness.js";

/**
 * Three real `shardlimit serve --etcd` processes with TLS on every link: clients and peers with
 * mutual TLS (`--tls-client-auth require`), etcd over TLS with client certificates and
 * user/password auth. The plaintext cluster's behaviours hold (cluster-cases.ts), and the
 * certificates rotate under load without a failed call.
 */

const silent = { info: () => {}, error: () => {} };

describe("a cluster of three servers with TLS on every link", () => {
  let h: ClusterHarness;
  beforeAll(async () => {
    h = await startClusterHarness({
      servers: 3,
      config: CLUSTER_CONFIG,
      extraArgs: ["--rebalance-interval", "0"],
      tls: { reloadMs: 300 },
    });
    await h.startAll();
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
    await killAllCli();
  });

  it("etcd and the servers refuse whoever comes without the right credentials", async () => {
    const tls = h.tls!;
    // etcd: no TLS at all, and TLS with a certificate but no password.
    for (const access of [{}, { credentials: h.etcd.access.credentials }]) {
      const c = connectEtcd(
        [h.etcd.url.replace("https://", access.credentials ? "https://" : "http://")],
        access,
      );
      try {
        await expect(c.get("/anything").string()).rejects.toThrow();
      } finally {
        c.close();
      }
    }
    // `shardlimit status` reaches it with the same flags the servers use; without them it cannot.
    const status = (extra: string[]) =>
      runCli(["status", "--etcd", h.etcd.url, "--prefix", h.prefix, "--json", ...extra]);
    const ok = status(h.etcd.accessArgs);
    expect(ok.status, ok.stderr).toBe(0);
    expect((JSON.parse(ok.stdout) as { members: unknown[] }).members).toHaveLength(3);
    expect(status([]).status).not.toBe(0);
    // So does `shardlimit assigner`: it registers its candidacy in etcd, then says it runs.
    const assigner = spawnCli(
      [
        "assigner",
        "--etcd",
        h.etcd.url,
        "--prefix",
        h.prefix,
        "--id",
        "extra-assigner",
        ...h.etcd.accessArgs,
      ],
      { cli: "built" },
    );
    await assigner.waitForLog("the assigner running", (l) => l.msg === "assigner candidate running", {
      timeoutMs: 15_000,
    });
    await assigner.stop("SIGTERM");
    // A server: plaintext, and TLS without a client certificate.
    const s = h.servers[0]!;
    const plain = connect(s.address);
    const noCert = clientTls({ ca: tls.pki.ca.caFile }, { clock: systemClock, log: silent });
    const anonymous = connect(s.address, noCert.options, systemClock, noCert.credentials);
    try {
      for (const rpc of [plain, anonymous]) {
        await expect(
          rpc.check({ items: [{ key: "api/k=x", cost: 1 }] }, { deadlineMs: 2000 }),
        ).rejects.toMatchObject({
          code: grpc.status.UNAVAILABLE,
        });
      }
    } finally {
      plain.close();
      anonymous.close();
      noCert.source.close();
    }
  }, 60_000);

  it("counts exactly: Check calls spread over all three (forwarded over mutual TLS) see one counter per key", async () => {
    await countsExactlyAcross(h, CLUSTER_KEYS);
  }, 60_000);

  it("certificates rotated three times under load: no failed call, new handshakes present the new ones", async () => {
    const tls = h.tls!;
    const keys = Array.from({ length: 30 }, (_, i) => `api/k=rotate-${i}`);
    const view = await h.view("s1");
    const ownerOf = new Map(keys.map((k) => [k, h.ownerIn(view, k)]));
    const admitted = new Map<string, number>(keys.map((k) => [k, 0]));
    let running = true;
    let calls = 0;
    let forwarded = 0;
    const problems: string[] = [];
    // Even workers call each key's owner, odd ones a server that forwards it to the owner.
    const workers = Array.from({ length: 6 }, async (_, w) => {
      for (let i = w; running; i++) {
        const key = keys[(i * 7 + w) % keys.length]!;
        const owner = ownerOf.get(key)!;
        const others = h.servers.filter((s) => s.id !== owner);
        const via = w % 2 === 0 ? h.server(owner) : others[i % others.length]!;
        try {
          const r = await via.rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
          const res = r.results[0]!;
          if (res.error) problems.push(`${key} via ${via.id}: ${res.error.message}`);
          else if (res.allowed) admitted.set(key, admitted.get(key)! + 1);
          if (via.id !== owner) forwarded++;
        } catch (err) {
          problems.push(`${key} via ${via.id}: ${(err as Error).message}`);
        }
        calls++;
      }
    });
    const clientFiles = { ca: tls.pki.ca.caFile, cert: tls.client.cert, key: tls.client.key };
    const t0 = Date.now();
    const serials: string[][] = [];
    try {
      for (let round = 1; round <= 3; round++) {
        const before = calls;
        const next = new Map<string, string>();
        for (const s of h.servers) {
          next.set(s.id, tls.pki.ca.reissue(tls.servers.get(s.id)!, tls.serverNames(s.id)).serial);
        }
        const client = tls.pki.ca.reissue(tls.client, {
          commonName: "gateway",
          uris: ["spiffe://shardlimit.test/gateway"],
        });
        // Each server's fresh handshake shows its new certificate once it has re-read its files.
        await waitFor(
          `round ${round}: every server presenting its new certificate`,
          async () => {
            for (const s of h.servers) {
              if ((await peerSerial(s.address, clientFiles)) !== next.get(s.id)) return false;
            }
            return true;
          },
          10_000,
          50,
        );
        // The test's own clients have taken the new client certificate too.
        await waitFor(
          `round ${round}: the clients holding the new client certificate`,
          async () =>
            [...tls.clientSources.values()].every((c) => c.source.current().serial === client.serial),
          10_000,
          50,
        );
        serials.push([...next.values()]);
        // Calls keep flowing between rotations.
        await waitFor(`round ${round}: calls going on`, async () => calls >= before + 100, 10_000, 20);
      }
      // A new connection with the rotated client certificate: straight to each server, which
      // forwards what it does not own to its peers.
      const fresh = clientTls(clientFiles, { clock: systemClock, log: silent });
      try {
        for (const s of h.servers) {
          const rpc = connect(s.address, fresh.options, systemClock, fresh.credentials);
          try {
            const r = await rpc.check({ items: keys.map((key) => ({ key, cost: 0 })) }, { deadlineMs: 5000 });
            expect(r.results.map((x) => x.error ?? null)).toEqual(keys.map(() => null));
          } finally {
            rpc.close();
          }
        }
      } finally {
        fresh.source.close();
      }
    } finally {
      running = false;
      await Promise.all(workers);
    }
    console.log(
      `3 rotations of 3 server certificates and the client's under load: ${Date.now() - t0} ms, ${calls} checks (${forwarded} forwarded), ${problems.length} failed`,
    );
    expect(problems).toEqual([]);
    expect(forwarded).toBeGreaterThan(0);
    expect(new Set(serials.flat()).size).toBe(9);
    // Exact counts: every admitted call counted once (the check of cost 0 above counts 1).
    for (const key of keys) {
      const r = await h.server("s1").rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
      expect(r.results[0]!.remaining).toBe(1_000_000 - admitted.get(key)! - h.servers.length - 1);
    }
  }, 90_000);

  it("SIGTERM of one server moves its slices with their counts over TLS: no key regains quota", async () => {
    await sigtermMovesCounts(h, CLUSTER_KEYS);
  }, 60_000);

  it("after SIGKILL of one server the others serve every key again within 10 s", async () => {
    await sigkillHeals(h, CLUSTER_KEYS);
  }, 60_000);
});

describe("servers sharing one certificate name (--peer-server-name)", () => {
  let h: ClusterHarness;
  beforeAll(async () => {
    // No address on the certificates: peers are verified only under the shared name.
    h = await startClusterHarness({
      servers: 3,
      config: CLUSTER_CONFIG,
      extraArgs: ["--rebalance-interval", "0"],
      tls: { sharedName: "shardlimit.cluster.test" },
    });
    await h.startAll();
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
    await killAllCli();
  });

  it("forwards over mutual TLS to peers verified under that name: exact counts across servers", async () => {
    await countsExactlyAcross(h, CLUSTER_KEYS);
  }, 60_000);
});
