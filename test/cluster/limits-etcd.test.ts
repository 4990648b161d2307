import { writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import type { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLimiter } from "../../src/client/create.js";
import type { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { connectEtcd } from "../../src/cluster/etcd-client.js";
import { STAGE_WAIT_MS } from "../../src/cluster/limits-source.js";
import { deleteOverride, pushLimits, putOverride, readLimits } from "../../src/cluster/limits-store.js";
import { type MemberRecord, membersPrefix, parseMembers } from "../../src/cluster/membership.js";
import { PrefixView } from "../../src/cluster/prefix-view.js";
import { compileSources } from "../../src/config/load.js";
import { type LimitOverride, overridesSource } from "../../src/config/overrides.js";
import type { ConfigSource } from "../../src/config/types.js";
import { systemClock } from "../../src/core/clock.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { ensureBuilt, killAllCli, runCli } from "../../src/testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, waitAllReady } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * Limits in etcd on three real `serve --limits-from etcd` processes and a gateway client:
 * pushes reach every server (time measured over 20 pushes, for bench/RESULTS.md §15), an invalid
 * push is refused with check-config's own words, a server that refuses a version (it removes a
 * rule and that server runs without --allow-limit-removal) keeps the old one and says so in
 * `status` and `/readyz`, and runtime overrides reach servers and the gateway and expire.
 */

const config = (tenantLimit: number, withPath = true) => `domain: api
descriptors:
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: ${tenantLimit} }
${withPath ? "  - key: path\n    rate_limit: { unit: minute, requests_per_unit: 100 }\n" : ""}`;

const noLog = { debug() {}, info() {}, warn() {}, error() {} };

/** What a server serves for `sources` with `overrides`: the digest it publishes and GetLimits gives. */
function served(sources: readonly ConfigSource[], overrides: readonly LimitOverride[] = []): string {
  return compileSources([...sources, overridesSource(overrides)]).version;
}

/**
 * GET /readyz on a connection of its own: fetch's pool may reuse a socket that waitAllReady left
 * idle, just as the server's keep-alive timeout closes it ("other side closed").
 */
function readyz(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path: "/readyz", agent: false }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

/** The q-quantile (nearest rank): with 20 samples P99 is the slowest. */
function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

describe("limits in etcd on a three-server cluster", () => {
  let etcd: EtcdProcess;
  let client: Etcd3;
  let members: PrefixView;
  let servers: ServerProcess[] = [];
  let rpcs: RateLimiterRpc[] = [];
  let gateway: GatewayLimiter;
  let traffic: ReturnType<typeof setInterval> | undefined;
  const prefix = "/limits-etcd/";
  const dir = tempDir("shardlimit-limits-");
  const file = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  const cli = (...args: string[]) => runCli(["limits", ...args, "--etcd", etcd.url, "--prefix", prefix]);
  const memberMap = (): Map<string, MemberRecord> =>
    new Map(parseMembers(members.current, noLog).map((m) => [m.id, m]));
  /** Waits (polling an in-memory mirror, 2 ms) until every server's record passes `ok`; returns ms. */
  async function allMembers(
    what: string,
    ok: (m: MemberRecord) => boolean,
    timeoutMs = 10_000,
  ): Promise<void> {
    await waitFor(
      what,
      () => {
        const m = memberMap();
        return servers.every((s) => m.has(s.id) && ok(m.get(s.id)!));
      },
      timeoutMs,
      2,
    ).catch((err: Error) => {
      const limits = [...memberMap().values()].map((m) => ({ id: m.id, limits: m.limits }));
      const logs = servers.map((s) => `--- ${s.id}\n${s.child?.output().slice(-3000)}`).join("\n");
      throw new Error(`${err.message}; members' limits: ${JSON.stringify(limits)}\n${logs}`);
    });
  }

  /** When each server logged that `version` is in force (pino's `time`, ms, from its own log). */
  async function switchTimes(version: number): Promise<number[]> {
    return Promise.all(
      servers.map(async (s) => {
        const { log } = await s.child!.waitForLog(
          `${s.id} to log version ${version} in force`,
          (l) => l.msg === "limits version in force" && l.limitsVersion === version,
          { timeoutMs: 5000 },
        );
        return log.time as number;
      }),
    );
  }

  beforeAll(async () => {
    ensureBuilt();
    etcd = await startEtcd();
    client = connectEtcd([etcd.url]);
    const first = cli("push", file("v1.yaml", config(100)), "--comment", "first");
    expect(first.status, first.stderr).toBe(0);
    servers = await Promise.all(
      ["s1", "s2", "s3"].map((id) =>
        serverProcess({
          id,
          configPath: undefined,
          etcdUrl: etcd.url,
          prefix,
          cli: "built",
          // s3 refuses versions that remove limits, as every server does by default.
          extraArgs: ["--limits-from", "etcd", ...(id === "s3" ? [] : ["--allow-limit-removal"])],
        }),
      ),
    );
    await Promise.all(servers.map((s) => s.start()));
    await waitAllReady(servers, 30_000);
    rpcs = servers.map((s) => connect(s.address));
    members = new PrefixView({
      client,
      prefix: membersPrefix(prefix),
      clock: systemClock,
      log: noLog,
      onChange: () => {},
    });
    await members.start();
    gateway = await createLimiter({
      servers: servers.map((s) => s.address),
      clientId: "gw-limits",
      reportIntervalMs: 50,
      reportTimeoutMs: 500,
      viewRefreshMs: 500,
    });
    // A gateway learns of a new version from its report answers: keep it reporting.
    traffic = setInterval(() => gateway.decide("api/tenant=busy"), 10);
  }, 90_000);

  afterAll(async () => {
    if (traffic) clearInterval(traffic);
    gateway?.close();
    for (const r of rpcs) r.close();
    await members?.stop();
    await Promise.all(servers.map((s) => s.stop()));
    await killAllCli();
    client?.close();
    await etcd?.destroy();
  });

  it("every server serves the pushed version and publishes it", async () => {
    const s = await readLimits(client, prefix);
    const digest = served(s.current!.sources);
    await allMembers("version 1 everywhere", (m) => m.limits?.version === 1 && m.limits.digest === digest);
    for (const r of rpcs)
      expect((await r.getLimits({ knownVersion: "" }, { deadlineMs: 2000 })).version).toBe(digest);
  });

  it("a server with --limits-from etcd does not start before anything is pushed, saying why", () => {
    const r = runCli([
      "serve",
      "--limits-from",
      "etcd",
      "--etcd",
      etcd.url,
      "--prefix",
      "/limits-etcd-empty/",
      "--id",
      "lonely",
      "--grpc-host",
      "127.0.0.1",
      "--grpc-port",
      "0",
      "--http-host",
      "127.0.0.1",
      "--http-port",
      "0",
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("no limits in etcd under /limits-etcd-empty/limits/");
    const noEtcd = runCli(["serve", "--limits-from", "etcd"]);
    expect(noEtcd.status).toBe(2);
    expect(noEtcd.stderr).toContain("--limits-from etcd needs --etcd");
  });

  it("refuses an invalid push with check-config's errors, and stores nothing", async () => {
    const bad = file(
      "bad.yaml",
      "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: { unit: fortnight, requests_per_unit: -1 }\n",
    );
    const before = await readLimits(client, prefix);
    const pushed = cli("push", bad);
    const checked = runCli(["check-config", bad]);
    expect(pushed.status).toBe(1);
    expect(checked.status).toBe(1);
    expect(pushed.stderr).toContain('"fortnight" is not a unit');
    expect(pushed.stderr).toBe(checked.stderr);
    const after = await readLimits(client, prefix);
    expect(after.head).toEqual(before.head);
    expect(after.versions.length).toBe(before.versions.length);

    // Past etcd's request size: refused saying so, nothing stored. A client of its own: the
    // failed request opens that client's circuit breaker for a moment.
    const huge = [{ file: "huge.yaml", text: `${config(5)}# ${"x".repeat(2 * 1024 * 1024)}\n` }];
    const other = connectEtcd([etcd.url]);
    await expect(
      pushLimits(other, prefix, { digest: "d", sources: huge, comment: "", at: systemClock.now() }),
    ).rejects.toThrow(/more than etcd takes in one request \(its --max-request-bytes/);
    other.close();
    expect((await readLimits(client, prefix)).head).toEqual(before.head);
  });

  it("20 pushes: every server and the gateway serve each new version (P99 under 1 s)", async () => {
    const servers_ms: number[] = [];
    const gateway_ms: number[] = [];
    const spread_ms: number[] = [];
    for (let i = 0; i < 20; i++) {
      const sources = [{ file: "api.yaml", text: config(200 + i) }];
      const digest = served(sources);
      const t0 = performance.now();
      const head = await pushLimits(client, prefix, {
        digest: compileSources(sources).version,
        sources,
        comment: `bench ${i}`,
        at: systemClock.now(),
      });
      await allMembers(
        `version ${head.version}`,
        (m) => m.limits?.version === head.version && m.limits.digest === digest,
      );
      servers_ms.push(performance.now() - t0);
      const switched = await switchTimes(head.version);
      spread_ms.push(Math.max(...switched) - Math.min(...switched));
      await waitFor("the gateway to fetch it", () => gateway.limitConfig()?.version === digest, 10_000, 2);
      gateway_ms.push(performance.now() - t0);
    }
    const last = await readLimits(client, prefix);
    for (const r of rpcs) {
      expect((await r.getLimits({ knownVersion: "" }, { deadlineMs: 2000 })).version).toBe(
        served(last.current!.sources),
      );
    }
    const rule = gateway.limitConfig()!.resolve("api", [{ key: "tenant", value: "x" }])!.rule;
    expect(rule.limit).toBe(219);
    const summary = {
      pushes: servers_ms.length,
      allServersP50: Math.round(quantile(servers_ms, 0.5)),
      allServersP99: Math.round(quantile(servers_ms, 0.99)),
      allServersMax: Math.round(Math.max(...servers_ms)),
      gatewayP50: Math.round(quantile(gateway_ms, 0.5)),
      gatewayP99: Math.round(quantile(gateway_ms, 0.99)),
      switchSpreadP50: quantile(spread_ms, 0.5),
      switchSpreadP99: quantile(spread_ms, 0.99),
    };
    console.log(`limits push timing (ms): ${JSON.stringify(summary)}`);
    expect(summary.allServersP99).toBeLessThan(1000);
  }, 120_000);

  it("servers switch together once all answered; a silent lowest-id member holds the switch until it leaves; a silent higher one is waited for at most 2 s", async () => {
    // A member record as a server serving limits from etcd publishes it, but nobody behind it:
    // draining, so nothing is placed on it.
    const fake = async (id: string) => {
      const lease = client.lease(30);
      await lease.put(`${membersPrefix(prefix)}${id}`).value(
        JSON.stringify({
          id,
          address: "127.0.0.1:9",
          capacity: 1,
          startedAt: 0,
          draining: true,
          limits: { version: 1, digest: "fake", staging: true },
        }),
      );
      await waitFor(`${id} registered`, () => memberMap().has(id), 5000, 2);
      return lease;
    };
    const push = (limit: number) => {
      const sources = [{ file: "api.yaml", text: config(limit) }];
      return pushLimits(client, prefix, {
        digest: compileSources(sources).version,
        sources,
        comment: `together ${limit}`,
        at: systemClock.now(),
      });
    };

    // s0 never answers, and it has the lowest id: the one to switch without every answer, which it
    // never does. Nothing switches while it is registered.
    const s0 = await fake("s0");
    const before = (await readLimits(client, prefix)).head!;
    const pushed = await push(400);
    expect(pushed.staged).toBe(true);
    await allMembers(
      "every server loaded the staged version",
      (m) => m.limits?.staged?.version === pushed.version && m.limits.staged.error === undefined,
    );
    const waiting = await readLimits(client, prefix);
    expect(waiting.head).toEqual(before);
    expect(waiting.staged?.record.version).toBe(pushed.version);
    for (const m of memberMap().values()) if (m.id !== "s0") expect(m.limits?.version).toBe(before.version);
    const status = runCli(["status", "--etcd", etcd.url, "--prefix", prefix]);
    expect(status.stdout).toMatch(
      new RegExp(`^s1 .* v${before.version} \\(\\w+\\) staged v${pushed.version} ready$`, "m"),
    );
    const get = cli("get");
    expect(get.stdout).toContain(`staged: version ${pushed.version}, waiting for the servers' answers`);
    expect(cli("history").stdout).toMatch(new RegExp(`^\\+ v${pushed.version} `, "m"));
    // s0 dies (its lease ends): every member left has answered, and one of them switches.
    await s0.revoke();
    await allMembers("everyone on the staged version", (m) => m.limits?.version === pushed.version);
    // Whichever server saw every answer first switched it on, with no answer missing.
    const on = await Promise.any(
      servers.map((s) =>
        s.child!.waitForLog(`${s.id} to switch it on`, (l) => {
          return l.msg === "staged limits version switched on" && l.limitsVersion === pushed.version;
        }),
      ),
    );
    expect(on.log.noAnswer).toEqual([]);
    expect((await readLimits(client, prefix)).staged).toBeUndefined();

    // s9 never answers: s1 switches without it once STAGE_WAIT_MS has passed since it saw the push.
    const s9 = await fake("s9");
    const t0 = performance.now();
    const late = await push(401);
    await allMembers("everyone on the next version", (m) => m.limits?.version === late.version);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(STAGE_WAIT_MS);
    const without = await servers[0]!.child!.waitForLog("s1 to switch without s9", (l) => {
      return l.msg === "staged limits version switched on" && l.limitsVersion === late.version;
    });
    expect(without.log.noAnswer).toEqual(["s9"]);
    await s9.revoke();
  }, 60_000);

  it("a server that cannot load a version keeps the old one, and status and /readyz say so", async () => {
    const before = (await readLimits(client, prefix)).head!.version;
    const removing = cli("push", file("no-path.yaml", config(300, false)));
    expect(removing.status).toBe(1);
    expect(removing.stderr).toContain('removes rule "api/path"');
    const pushed = cli("push", file("no-path.yaml", config(300, false)), "--allow-limit-removal");
    expect(pushed.status, pushed.stderr).toBe(0);
    const v = before + 1;
    expect(pushed.stdout).toContain(
      `in force on 2 of 3 servers (s1, s2)\n  s3 keeps version ${before}: refused it:`,
    );
    await allMembers("s1, s2 on the new version, s3 refusing it", (m) =>
      m.id === "s3"
        ? m.limits?.refused?.version === v && m.limits.version === before
        : m.limits?.version === v,
    );
    const status = runCli(["status", "--etcd", etcd.url, "--prefix", prefix]);
    expect(status.status).toBe(0);
    expect(status.stdout).toContain(`REFUSED v${v}`);
    expect(status.stdout).toContain(`s3 refused limits version ${v}:`);
    expect(status.stdout).toContain('removes rule "api/path"');
    const s3 = servers.find((s) => s.id === "s3")!;
    const ready = await readyz(s3.httpPort);
    expect(ready.status).toBe(200);
    expect(ready.body).toContain(`limits version ${v} refused, still serving version ${before}`);
    // s3 still limits api/path; the others no longer do.
    const resolve = (r: RateLimiterRpc) => r.getLimits({ knownVersion: "" }, { deadlineMs: 2000 });
    const s3Limits = compileSources((await resolve(rpcs[2]!)).sources);
    expect(s3Limits.resolve("api", [{ key: "path", value: "/a" }])).toBeDefined();
    const s1Limits = compileSources((await resolve(rpcs[0]!)).sources);
    expect(s1Limits.resolve("api", [{ key: "path", value: "/a" }])).toBeUndefined();

    // Overrides still reach it, applied to the version it serves.
    const o: LimitOverride = { key: "api/tenant=t9", requestsPerUnit: 9, unit: "second" };
    const kept = await readLimits(client, prefix);
    const oldSources = kept.versions.find((x) => x.version === before)!.sources;
    await putOverride(client, prefix, o);
    await allMembers("the override on both versions", (m) =>
      m.id === "s3"
        ? m.limits?.digest === served(oldSources, [o]) && m.limits.refused?.version === v
        : m.limits?.digest === served(kept.current!.sources, [o]),
    );
    await deleteOverride(client, prefix, o.key);

    // A later version it can load clears the refusal.
    const back = cli("push", file("v-back.yaml", config(301)));
    expect(back.status, back.stderr).toBe(0);
    await allMembers(
      "everyone on the version after",
      (m) => m.limits?.version === v + 1 && !m.limits.refused,
    );
  }, 60_000);

  it("overrides reach every server and the gateway, and expire on their own (times measured)", async () => {
    const s = await readLimits(client, prefix);
    const sources = s.current!.sources;
    const ttlMs = 3000;
    const o: LimitOverride = {
      key: "api/tenant=t1",
      requestsPerUnit: 3,
      unit: "minute",
      expiresAt: systemClock.now() + ttlMs,
    };
    const withIt = served(sources, [o]);
    const without = served(sources);
    const t0 = performance.now();
    await putOverride(client, prefix, o, ttlMs);
    await allMembers("the override on every server", (m) => m.limits?.digest === withIt);
    const setServers = performance.now() - t0;
    await waitFor("the gateway to get it", () => gateway.limitConfig()?.version === withIt, 5000, 2);
    const setGateway = performance.now() - t0;
    expect(gateway.limitConfig()!.resolve("api", [{ key: "tenant", value: "t1" }])!.rule.limit).toBe(3);
    // A real decision on a server: 3 a minute for t1 (the rule says 301 a second).
    const results: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await rpcs[0]!.check({ items: [{ key: "api/tenant=t1", cost: 1 }] }, { deadlineMs: 3000 });
      results.push(r.results[0]!.allowed ?? false);
    }
    expect(results).toEqual([true, true, true, false]);

    await allMembers(
      "the override expired on every server",
      (m) => m.limits?.digest === without,
      ttlMs + 5000,
    );
    const expiredServers = performance.now() - t0 - ttlMs;
    await waitFor("the gateway to drop it", () => gateway.limitConfig()?.version === without, 5000, 2);
    const expiredGateway = performance.now() - t0 - ttlMs;
    expect(gateway.limitConfig()!.resolve("api", [{ key: "tenant", value: "t1" }])!.rule.limit).toBe(301);
    const times = {
      setAllServers: Math.round(setServers),
      setGateway: Math.round(setGateway),
      expiryLagAllServers: Math.round(expiredServers),
      expiryLagGateway: Math.round(expiredGateway),
    };
    console.log(`override timing (ms): ${JSON.stringify(times)}`);
    expect(times.setAllServers).toBeLessThan(1000);
    expect(times.setGateway).toBeLessThan(1000);
    expect(times.expiryLagAllServers).toBeLessThan(1000);
  }, 30_000);

  it("limits diff, history and rollback from the command line", async () => {
    const before = await readLimits(client, prefix);
    const head = before.head!.version;
    const diff = cli("diff", file("v999.yaml", config(999)));
    expect(diff.status, diff.stderr).toBe(0);
    expect(diff.stdout).toBe(
      `from version ${head}:\n~ api/tenant  fixed_window 301 requests per 1s  ->  fixed_window 999 requests per 1s\n`,
    );
    expect((await readLimits(client, prefix)).head).toEqual(before.head);
    const history = cli("history");
    expect(history.stdout).toMatch(/^ {2}v1 {2}\S+ {2}\w+ {2}v1\.yaml {2}first$/m);
    expect(history.stdout).toMatch(new RegExp(`^\\* v${head} `, "m"));
    const rollback = cli("rollback", "1");
    expect(rollback.status, rollback.stderr).toBe(0);
    expect(rollback.stdout).toContain(`pushed version ${head + 1}`);
    const v1 = before.versions.find((v) => v.version === 1)!;
    await allMembers(
      "version 1's files everywhere",
      (m) => m.limits?.version === head + 1 && m.limits.digest === served(v1.sources),
    );
    expect((await readLimits(client, prefix)).current?.comment).toBe("rollback to version 1");
    const gone = cli("rollback", "9999");
    expect(gone.status).toBe(1);
    expect(gone.stderr).toContain("version 9999 is not kept (kept: 1 to");
  }, 60_000);

  it("limits set / get / unset from the command line", async () => {
    const set = cli(
      "set",
      "api/path=%2Fadmin",
      "--requests-per-unit",
      "5",
      "--unit",
      "second",
      "--ttl",
      "1h",
    );
    expect(set.status, set.stderr).toBe(0);
    expect(set.stdout).toContain("replaces rule api/path");
    const unknown = cli("set", "api/user=u1", "--requests-per-unit", "5", "--unit", "second");
    expect(unknown.status, unknown.stderr).toBe(0);
    expect(unknown.stdout).toContain("the override is a limit of its own");
    const bad = cli("set", "api/user=u1", "--requests-per-unit", "lots", "--unit", "second");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("--requests-per-unit must be a whole number");
    const otherDomain = cli("set", "web/ip=1", "--requests-per-unit", "5", "--unit", "second");
    expect(otherDomain.status).toBe(1);
    expect(otherDomain.stderr).toContain('domain "web" is not in version');
    const get = cli("get");
    expect(get.stdout).toContain("api/path=%2Fadmin  5 per second  (expires in");
    expect(get.stdout).toContain("api/user=u1  5 per second  (no expiry)");
    expect(cli("unset", "api/user=u1").status).toBe(0);
    expect(cli("unset", "api/path=%2Fadmin").status).toBe(0);
    expect(cli("unset", "api/path=%2Fadmin").status).toBe(1);
    expect(cli("get").stdout).toContain("overrides: none");
    const s = await readLimits(client, prefix);
    await allMembers("no overrides anywhere", (m) => m.limits?.digest === served(s.current!.sources));
  }, 60_000);
});
