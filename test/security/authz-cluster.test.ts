import { writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectPeer, type PeerRpc } from "../../src/cluster/peers.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { RateLimiterRpc } from "../../src/protocol/rpc.js";
import { sha256 } from "../../src/security/identity.js";
import { killAllCli, runCli } from "../../src/testkit/cli.js";
import { httpGet } from "../../src/testkit/http.js";
import { freePort } from "../../src/testkit/ports.js";
import { startProxy } from "../../src/testkit/tcp-proxy.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { waitFor } from "../../src/testkit/wait.js";
import { clearWindowSeconds } from "../../src/testkit/window.js";
import { type ClusterHarness, startClusterHarness } from "../cluster/cluster-harness.js";
import { callError, startCli } from "../server/harness.js";
import { tokenClient } from "./authz-fixtures.js";

/**
 * Three real `shardlimit serve --etcd` processes with `--auth-file` and a member token each
 * (`--token-file`): they forward and hand off as before; gateways (tokens) get only what the file
 * grants; forged peer calls change nothing; the file reloads while serving.
 */

/** Clear of a fixed-window boundary while this file runs: it asserts exact counts (see clearWindowSeconds). */
const WINDOW = `${clearWindowSeconds(10 * 60_000)}s`;
const CONFIG = `domain: api
descriptors:
  - key: k
    rate_limit: { window: ${WINDOW}, requests_per_unit: 1000000 }
  - key: conn
    rate_limit: { unit: second, requests_per_unit: 5, algorithm: concurrency }
---
domain: bank
descriptors:
  - key: k
    rate_limit: { window: ${WINDOW}, requests_per_unit: 1000 }
`;

const TOKENS: Record<string, string> = {
  s1: "member-one",
  s2: "member-two",
  s3: "member-three",
  "gw-a": "gateway-a",
  "gw-b": "gateway-b",
  ops: "operator",
};

function authText(gwB = "[api]"): string {
  const tokens = Object.entries(TOKENS)
    .map(([name, t]) => `  ${name}: ${sha256(t).toString("hex")}`)
    .join("\n");
  return `tokens:
${tokens}
members:
  - {identity: s1, member_id: s1}
  - {identity: s2, member_id: s2}
  - {identity: s3, member_id: s3}
gateways:
  - {identity: gw-a, domains: [api]}
  - {identity: gw-b, domains: ${gwB}}
operators:
  - {identity: ops}
`;
}

const KEYS = Array.from({ length: 30 }, (_, i) => `api/k=key-${i}`);
const meta = (token: string) => () => {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
};

describe("serve with a bad auth file", () => {
  it("does not start, and says which file and field", () => {
    const dir = tempDir("shardlimit-authz-bad-");
    const bad = path.join(dir, "auth.yaml");
    writeFileSync(bad, "gateways:\n  - identity: gw\n    domains: []\n");
    const config = path.join(dir, "config.yaml");
    writeFileSync(config, CONFIG);
    const r = runCli([
      "serve",
      "--config",
      config,
      "--auth-file",
      bad,
      "--grpc-port",
      "0",
      "--http-port",
      "0",
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      `shardlimit: cannot start: the auth file ${bad} is invalid:\n${bad}:3: gateways[0].domains: names no domain (use ["*"] for every domain)\n`,
    );
  });
});

describe("a three-server cluster under an auth file, members authenticated by token", () => {
  const dir = tempDir("shardlimit-authz-cluster-");
  const authFile = path.join(dir, "auth.yaml");
  let h: ClusterHarness;
  const gw: Record<string, RateLimiterRpc[]> = {};
  const peers: PeerRpc[] = [];

  beforeAll(async () => {
    writeFileSync(authFile, authText());
    for (const [name, token] of Object.entries(TOKENS)) writeFileSync(path.join(dir, name), `${token}\n`);
    h = await startClusterHarness({
      servers: 3,
      config: CONFIG,
      extraArgs: ["--rebalance-interval", "0", "--auth-file", authFile],
      argsOf: (id) => ["--token-file", path.join(dir, id)],
      metadata: meta(TOKENS.ops!),
    });
    await h.startAll();
    for (const name of ["gw-a", "gw-b"])
      gw[name] = h.servers.map((s) => tokenClient(s.grpcPort, TOKENS[name]));
  }, 60_000);
  afterAll(async () => {
    for (const list of Object.values(gw)) for (const r of list) r.close();
    for (const p of peers) p.close();
    await h?.stop();
    await killAllCli();
  });

  /** The remaining count of `key` after one charge through server index `via`, as `who`. */
  async function charge(who: string, via: number, key: string, cost = 1): Promise<number> {
    const r = await gw[who]![via]!.check({ items: [{ key, cost }] }, { deadlineMs: 5000 });
    const res = r.results[0]!;
    if (res.error) throw new Error(`${key} via s${via + 1}: ${res.error.message}`);
    return res.remaining!;
  }

  /** Counters held, per server (the metrics gauge). */
  async function counters(): Promise<number[]> {
    return Promise.all(
      h.servers.map(async (s) => {
        const body = (await httpGet(`http://127.0.0.1:${s.httpPort}/metrics`)).body;
        return Number(/^shardlimit_counters (\d+)/m.exec(body)![1]);
      }),
    );
  }

  /** No server holds a counter more than before (idle ones may be swept meanwhile). */
  function expectNoneCreated(before: number[], after: number[]): void {
    for (let i = 0; i < before.length; i++) expect(after[i]!, `s${i + 1}`).toBeLessThanOrEqual(before[i]!);
  }

  it("forwards with member tokens: Check calls spread over all three count exactly", async () => {
    for (let round = 1; round <= 3; round++) {
      for (const [i, key] of KEYS.entries()) {
        expect(await charge("gw-a", (i + round) % 3, key, 2)).toBe(1_000_000 - 2 * round);
      }
    }
  });

  it("a gateway cannot settle another gateway's ticket through any server, nor release its lease", async () => {
    for (let i = 0; i < 3; i++) {
      const key = `api/k=ticket-${i}`;
      const r = await gw["gw-a"]![i]!.check(
        { items: [{ key, cost: 500, ticket: true }] },
        { deadlineMs: 5000 },
      );
      const ticketId = r.results[0]!.ticketId!;
      const other = await gw["gw-b"]![(i + 1) % 3]!.settle(
        { key, ticketId, actual: [0] },
        { deadlineMs: 5000 },
      );
      expect(other.error?.code).toBe(ErrorCode.PERMISSION_DENIED);
      expect(other.error?.message).toMatch(
        /taken by another identity; only its taker may settle it \(caller "gw-b"\)/,
      );
      // Nothing was refunded: the estimate is still charged.
      expect(await charge("gw-a", i, key, 1)).toBe(1_000_000 - 501);
      const own = await gw["gw-a"]![(i + 2) % 3]!.settle(
        { key, ticketId, actual: [100] },
        { deadlineMs: 5000 },
      );
      expect(own.error ?? null).toBeNull();
      expect(own.remaining).toBe(1_000_000 - 101);
    }
    // Leases are taken at the key's owner.
    const key = "api/conn=c1";
    const owner = h.ownerIn(await h.view("s1"), key);
    const at = h.servers.findIndex((s) => s.id === owner);
    const got = await gw["gw-a"]![at]!.acquire({ key, leaseId: "L1", amount: 3 });
    expect(got).toMatchObject({ allowed: true, remaining: 2 });
    const stolen = await gw["gw-b"]![at]!.release({ key, leaseId: "L1" });
    expect(stolen.error?.code).toBe(ErrorCode.PERMISSION_DENIED);
    expect((await gw["gw-b"]![at]!.acquire({ key, leaseId: "L2", amount: 3 })).allowed).toBeFalsy();
    expect((await gw["gw-a"]![at]!.release({ key, leaseId: "L1" })).released).toBe(true);
  });

  it("a gateway cannot check or report for a domain it is not granted, and changes nothing trying", async () => {
    const before = await counters();
    const err = await callError(gw["gw-a"]![0]!.check({ items: [{ key: "bank/k=1", cost: 1 }] }));
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toBe('Check refused for identity "gw-a" for domain "bank"');
    const rep = await callError(
      gw["gw-a"]![1]!.reportAndGetPolicy({
        clientId: "gw-a-1",
        seq: 1,
        entries: [{ key: "bank/k=1", admitted: 999, rejected: 0, held: 0, windowAdmitted: 999 }],
      }),
    );
    expect(rep.code).toBe(grpc.status.PERMISSION_DENIED);
    expectNoneCreated(before, await counters());
    // An operator may read every limit; it charges bank's counter once, to show it was untouched.
    const limits = await h.servers[2]!.rpc.getLimits({});
    expect(limits.sources[0]!.text).toContain("domain: bank");
    expect((await h.check("s2", "bank/k=1", 1)).remaining).toBe(999);
  });

  it("Peer calls: refused to gateways and to a member naming another, and for ranges not pending; forged counters refused", async () => {
    const peerAs = (token: string, i = 0) => {
      const p = connectPeer(h.servers[i]!.address, undefined, undefined, undefined, meta(token));
      peers.push(p);
      return p;
    };
    const view = await h.view("s1");
    const generation = view.generation;
    const key = KEYS.find((k) => h.ownerIn(view, k) === "s1")!;
    const before = await counters();
    const remaining = await charge("gw-a", 0, key, 1);
    const forged: CounterSnapshot = {
      key,
      shard: key,
      algorithm: "fixed_window",
      tRelMs: -1,
      x: 0,
      y: 0,
      expiresInMs: 3_600_000,
      leases: [],
      clients: [],
    };
    const handoff = (p: PeerRpc, from: string, c: CounterSnapshot) =>
      callError(
        p.handoff({ generation, from, ranges: [], counters: [c], done: false }, { deadlineMs: 5000 }),
      );

    const asGateway = await handoff(peerAs(TOKENS["gw-a"]!), "s2", forged);
    expect(asGateway.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(asGateway.details).toBe(
      'Handoff refused for identity "gw-a": only cluster members may call the peer service',
    );
    const fwd = await callError(peerAs(TOKENS["gw-b"]!).forward({ generation, envoy: [], checks: [] }));
    expect(fwd.code).toBe(grpc.status.PERMISSION_DENIED);
    const asOther = await handoff(peerAs(TOKENS.s2!), "s3", forged);
    expect(asOther.details).toBe('Handoff refused for identity "s2": it is member "s2", not "s3"');
    const notPending = await handoff(peerAs(TOKENS.s2!), "s2", forged);
    expect(notPending.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(notPending.details).toMatch(
      /no range this server gained from "s2" and waits for \(no move of it is pending\)/,
    );
    for (const bad of [
      { tRelMs: 3_600_000 },
      { x: Number.NaN },
      { y: Number.POSITIVE_INFINITY },
      { algorithm: "token_bucket" },
      {
        clients: Array.from({ length: 100_000 }, (_, i) => ({
          id: `g${i}`,
          demand: 1,
          held: 0,
          seenMsAgo: 0,
        })),
      },
    ]) {
      const e = await handoff(peerAs(TOKENS.s2!), "s2", { ...forged, ...bad });
      expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    }
    const replicate = await callError(
      peerAs(TOKENS.s3!).replicate({ from: "s1", generation, counters: [], drained: true }),
    );
    expect(replicate.details).toBe('Replicate refused for identity "s3": it is member "s3", not "s1"');
    const reclaim = await callError(
      peerAs(TOKENS["gw-a"]!).reclaim({
        generation,
        from: "s2",
        address: "127.0.0.1:1",
        ranges: [{ start: 0, end: 2 ** 32 }],
      }),
    );
    expect(reclaim.code).toBe(grpc.status.PERMISSION_DENIED);
    // Nothing changed: the same counters everywhere, and the key's count goes on from where it was.
    expectNoneCreated(before, await counters());
    expect(await charge("gw-a", 1, key, 1)).toBe(remaining - 1);
  });

  it("inspect through any member: it asks the owner over Peer.Inspect (members only), the owner's address unreachable from the operator", async () => {
    const view = await h.view("s1");
    const key = KEYS.find((k) => h.ownerIn(view, k) !== "s1")!;
    const owner = h.ownerIn(view, key);
    // Other tests of this file may have charged the key: what the owner has left is what this
    // check's answer said.
    const charged = await h.check("s1", key, 1);
    // The operator reaches s1 only, at 127.0.0.3 (a proxy to it); every other address, the
    // members' advertised 127.0.0.1 ones included, goes through an HTTP proxy that is not there.
    const s1 = await startProxy(`http://${h.server("s1").address}`, { host: "127.0.0.3" });
    const env = { grpc_proxy: `http://127.0.0.1:${await freePort()}`, no_grpc_proxy: "127.0.0.3" };
    // Not spawnSync: the proxy runs in this process.
    const inspect = async (target: string) => {
      const p = startCli(
        ["inspect", key, "--target", target, "--token-file", path.join(dir, "ops"), "--json"],
        env,
      );
      const { code } = await p.exited;
      return { code, out: p.lines.join("\n"), err: p.stderr() };
    };
    try {
      const r = await inspect(s1.address);
      expect(r.code, r.err).toBe(0);
      expect(r.err).toContain(`(s1) does not own ${key}: it asked its owner ${owner} at`);
      const x = JSON.parse(r.out);
      expect(x.owned).toBe(true);
      expect(x.owner.id).toBe(owner);
      expect(x.counters[0].counter.remaining).toBe(charged.remaining);
      // The owner itself is out of the operator's reach, as meant.
      const direct = await inspect(h.server(owner).address);
      expect(direct.code).toBe(1);
    } finally {
      await s1.close();
    }
    // Peer.Inspect is the peer service's: a gateway is refused it; RateLimiter.Inspect is operators'.
    const asGateway = connectPeer(
      h.servers[0]!.address,
      undefined,
      undefined,
      undefined,
      meta(TOKENS["gw-a"]!),
    );
    peers.push(asGateway);
    const refused = await callError(asGateway.inspect!({ key }, { deadlineMs: 5000 }));
    expect(refused.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(refused.details).toBe(
      'Peer.Inspect refused for identity "gw-a": only cluster members may call the peer service',
    );
  }, 60_000);

  it("reloads the auth file when it changes: a good file applies, a bad one keeps the old and is counted", async () => {
    const bank = (i: number) =>
      gw["gw-b"]![i]!.check({ items: [{ key: "bank/k=2", cost: 1 }] }, { deadlineMs: 5000 });
    expect((await callError(bank(0))).code).toBe(grpc.status.PERMISSION_DENIED);
    writeFileSync(authFile, authText("[api, bank]"));
    await waitFor(
      "every server to take the new auth file",
      async () => {
        for (let i = 0; i < 3; i++)
          if (
            !(await bank(i).then(
              () => true,
              () => false,
            ))
          )
            return false;
        return true;
      },
      10_000,
      50,
    );
    writeFileSync(authFile, `${authText("[api]")}\nbogus: true\n`);
    await waitFor(
      "every server to refuse the bad auth file",
      async () => {
        for (const s of h.servers) {
          const body = (await httpGet(`http://127.0.0.1:${s.httpPort}/metrics`)).body;
          if (!/^shardlimit_auth_reloads_total\{result="error"\} [1-9]/m.test(body)) return false;
        }
        return true;
      },
      10_000,
      50,
    );
    // The previous (good) file is still in force: gw-b may still check bank.
    for (let i = 0; i < 3; i++) expect((await bank(i)).results[0]!.allowed).toBe(true);
    writeFileSync(authFile, authText());
  });

  it("shardlimit status --token-file asks each member its generation with the token", () => {
    const status = (tokenFile: string) =>
      runCli([
        "status",
        "--etcd",
        h.etcd.url,
        "--prefix",
        h.prefix,
        "--token-file",
        path.join(dir, tokenFile),
      ]);
    const asOps = status("ops");
    expect(asOps.status).toBe(0);
    for (const id of ["s1", "s2", "s3"])
      expect(asOps.stdout).toMatch(new RegExp(`member ${id} serves generation \\d+`));
    writeFileSync(path.join(dir, "nobody"), "not-a-token");
    const wrong = status("nobody");
    expect(wrong.stdout).toMatch(
      /member s1 did not answer: 16 UNAUTHENTICATED: GetClusterView refused: the bearer token matches no identity/,
    );
  });

  it("SIGTERM of one server hands its slices over under the auth file: no key regains quota", async () => {
    const before = new Map<string, number>();
    for (const key of KEYS) before.set(key, await charge("gw-a", 0, key, 1));
    const view = await h.view("s1");
    const itsKeys = KEYS.filter((k) => h.ownerIn(view, k) === "s2");
    expect(itsKeys.length).toBeGreaterThan(0);
    await h.kill("s2", "SIGTERM");
    expect(h.server("s2").child!.child.exitCode).toBe(0);
    for (const key of KEYS) expect(await charge("gw-a", 2, key, 1)).toBe(before.get(key)! - 1);
    const after = await h.view("s3");
    for (const key of itsKeys) expect(h.ownerIn(after, key)).not.toBe("s2");
  });
});
