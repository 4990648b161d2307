import { writeFileSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openWarning, type RunningServer } from "../../src/app/serve.js";
import { startSidecar } from "../../src/app/sidecar.js";
import { createLimiter } from "../../src/client/create.js";
import { resolveKey } from "../../src/config/config.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import type { RateLimiterRpc } from "../../src/protocol/rpc.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { writeConfig } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { AUTHZ_CONFIG, authFileText, TOKENS, tokenClient, writeAuth } from "../security/authz-fixtures.js";
import { callError } from "./harness.js";

/**
 * The authorisation file over real gRPC calls with bearer tokens, on an in-process server: who may
 * call what, per-domain refusals per item, taker-only settle and release, GetLimits by domain; every
 * refusal changes nothing (the counters, clients and tickets read back the same).
 */

/** What a refusal must not change: counters, reporting clients, open tickets, and one key's count. */
function state(server: RunningServer, keys: readonly string[]) {
  const config = server.limiter.config;
  const now = Date.now();
  return {
    counters: server.engine.size,
    clients: server.engine.clients,
    tickets: server.limiter.tickets.table.size,
    remaining: keys.map((k) => {
      const r = resolveKey(config, k);
      if (r === undefined || typeof r === "string") throw new Error(`no rule for ${k}`);
      return server.engine.peek(r.counterKey, r.rule, now).remaining;
    }),
  };
}

async function deniedCount(server: RunningServer, method: string, reason: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}/metrics`);
  const text = await res.text();
  const m = new RegExp(`shardlimit_denied_total\\{method="${method}",reason="${reason}"\\} (\\d+)`).exec(
    text,
  );
  return m ? Number(m[1]) : 0;
}

describe("the authorisation file, over gRPC with bearer tokens", () => {
  let server: RunningServer;
  const rpc: Record<string, RateLimiterRpc> = {};
  const KEYS = ["shop/user=u1", "bank/user=u1"];

  let authPath: string;

  beforeAll(async () => {
    authPath = writeAuth(authFileText());
    server = await startLoopbackServer(writeConfig(AUTHZ_CONFIG), { serve: { authFile: authPath } });
    for (const [name, token] of Object.entries(TOKENS)) rpc[name] = tokenClient(server.grpcPort, token);
    rpc.anonymous = tokenClient(server.grpcPort);
    rpc.wrong = tokenClient(server.grpcPort, "not-a-token");
  });
  afterAll(async () => {
    for (const r of Object.values(rpc)) r.close();
    await server?.shutdown();
  });

  it("refuses an identity with no grant, naming method and identity, counts it, and changes nothing", async () => {
    const before = state(server, KEYS);
    const n = await deniedCount(server, "Check", "no_grant");
    const err = await callError(rpc.anonymous!.check({ items: [{ key: "shop/user=u1", cost: 1 }] }));
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toBe('Check refused for identity "anonymous": it may check in no domain');
    expect(await deniedCount(server, "Check", "no_grant")).toBe(n + 1);
    const view = await callError(rpc.anonymous!.getClusterView({}));
    expect(view.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(state(server, KEYS)).toEqual(before);
  });

  it("refuses a token that matches no identity as UNAUTHENTICATED", async () => {
    const err = await callError(rpc.wrong!.check({ items: [{ key: "shop/user=u1", cost: 1 }] }));
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err.details).toMatch(/bearer token matches no identity/);
  });

  it("lets a gateway check its domain, refuses another's per item in a mixed batch and whole otherwise", async () => {
    const shop = rpc["gw-shop"]!;
    const ok = await shop.check({ items: [{ key: "shop/user=u1", cost: 1 }] });
    expect(ok.results[0]).toMatchObject({ allowed: true, remaining: 99 });
    const before = state(server, KEYS);
    const mixed = await shop.check({
      items: [
        { key: "bank/user=u1", cost: 5 },
        { key: "shop/user=u1", cost: 1 },
      ],
    });
    expect(mixed.results[0]!.error).toEqual({
      code: ErrorCode.PERMISSION_DENIED,
      message: 'Check refused for identity "gw-shop" for domain "bank"',
    });
    expect(mixed.results[1]).toMatchObject({ allowed: true, remaining: 98 });
    const after = state(server, KEYS);
    expect(after.remaining).toEqual([before.remaining[0]! - 1, before.remaining[1]]);
    const whole = await callError(shop.check({ items: [{ key: "bank/user=u1", cost: 1 }] }));
    expect(whole.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(whole.details).toBe('Check refused for identity "gw-shop" for domain "bank"');
    const atomic = await callError(
      shop.check({
        atomic: true,
        items: [
          { key: "shop/user=u1", cost: 1 },
          { key: "bank/user=u1", cost: 1 },
        ],
      }),
    );
    expect(atomic.code).toBe(grpc.status.PERMISSION_DENIED);
    const envoy = await callError(
      shop.shouldRateLimit({ domain: "bank", descriptors: [{ entries: [{ key: "user", value: "u1" }] }] }),
    );
    expect(envoy.details).toBe('ShouldRateLimit refused for identity "gw-shop" for domain "bank"');
    const settle = await callError(shop.settle({ key: "bank/user=u1", delta: -50 }));
    expect(settle.details).toBe('Settle refused for identity "gw-shop" for domain "bank"');
    expect(state(server, KEYS)).toEqual(after);
  });

  it("refuses reports for another domain: a report of only those whole, before its client is recorded", async () => {
    const shop = rpc["gw-shop"]!;
    const before = state(server, KEYS);
    const n = await deniedCount(server, "ReportAndGetPolicy", "domain");
    const err = await callError(
      shop.reportAndGetPolicy({
        clientId: "gw-1",
        seq: 1,
        entries: [{ key: "bank/user=u1", admitted: 1000, rejected: 0, held: 0, windowAdmitted: 1000 }],
      }),
    );
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toBe('ReportAndGetPolicy refused for identity "gw-shop" for domain "bank"');
    expect(await deniedCount(server, "ReportAndGetPolicy", "domain")).toBe(n + 1);
    expect(state(server, KEYS)).toEqual(before);
    const mixed = await shop.reportAndGetPolicy({
      clientId: "gw-1",
      seq: 1,
      entries: [
        { key: "bank/user=u1", admitted: 1000, rejected: 0, held: 0, windowAdmitted: 1000 },
        { key: "shop/user=u2", admitted: 3, rejected: 0, held: 0, windowAdmitted: 3 },
      ],
    });
    expect(mixed.policies[0]!.error?.code).toBe(ErrorCode.PERMISSION_DENIED);
    expect(mixed.policies[1]!.error).toBeFalsy();
    expect(state(server, KEYS).remaining[1]).toBe(before.remaining[1]);
  });

  it("lets only the taker settle its ticket", async () => {
    const res = await rpc["gw-shop"]!.check({ items: [{ key: "shop/user=t", cost: 10, ticket: true }] });
    const ticketId = res.results[0]!.ticketId!;
    expect(ticketId).not.toBe("");
    const before = state(server, ["shop/user=t"]);
    const n = await deniedCount(server, "Settle", "not_taker");
    const other = await rpc["gw-shop2"]!.settle({ key: "shop/user=t", ticketId, actual: [0] });
    expect(other.error).toEqual({
      code: ErrorCode.PERMISSION_DENIED,
      message: `ticket "${ticketId}" was taken by another identity; only its taker may settle it (caller "gw-shop2")`,
    });
    expect(await deniedCount(server, "Settle", "not_taker")).toBe(n + 1);
    expect(state(server, ["shop/user=t"])).toEqual(before);
    const own = await rpc["gw-shop"]!.settle({ key: "shop/user=t", ticketId, actual: [0] });
    expect(own.error).toBeFalsy();
    expect(own.remaining).toBe(100);
  });

  it("lets only the taker release (or renew) its lease", async () => {
    const key = "shop/conn=c1";
    const got = await rpc["gw-shop"]!.acquire({ key, leaseId: "L1", amount: 2 });
    expect(got).toMatchObject({ allowed: true, remaining: 3 });
    const before = state(server, [key]);
    const release = await rpc["gw-shop2"]!.release({ key, leaseId: "L1" });
    expect(release.error?.code).toBe(ErrorCode.PERMISSION_DENIED);
    expect(release.error?.message).toBe(
      'lease "L1" was taken by another identity; "gw-shop2" may not release it',
    );
    const renew = await rpc["gw-shop2"]!.acquire({ key, leaseId: "L1", amount: 2 });
    expect(renew.error?.code).toBe(ErrorCode.PERMISSION_DENIED);
    expect(state(server, [key])).toEqual(before);
    expect((await rpc["gw-shop"]!.release({ key, leaseId: "L1" })).released).toBe(true);
  });

  it("a gateway client with tokenFile learns its domains' limits; without a token it never gets ready", async () => {
    const dir = tempDir("shardlimit-token-");
    writeFileSync(path.join(dir, "token"), "t-shop\n");
    const servers = [`127.0.0.1:${server.grpcPort}`];
    const limiter = await createLimiter({
      servers,
      clientId: "gw-shop-client",
      tokenFile: path.join(dir, "token"),
    });
    try {
      expect(limiter.limitConfig()?.domains).toEqual(["shop"]);
    } finally {
      limiter.close();
    }
    await expect(createLimiter({ servers, clientId: "anon", connectTimeoutMs: 500 })).rejects.toThrow();
  });

  it("a sidecar with a token file serves Envoy from its domains' limits", async () => {
    const dir = tempDir("shardlimit-token-");
    writeFileSync(path.join(dir, "token"), "t-shop");
    const sidecar = await startSidecar({
      listen: "127.0.0.1:0",
      servers: [`127.0.0.1:${server.grpcPort}`],
      clientId: "sidecar-shop",
      reportIntervalMs: 50,
      limits: DEFAULT_INPUT_LIMITS,
      log: pino({ level: "silent" }),
      connectTimeoutMs: 2000,
      tokenFile: path.join(dir, "token"),
    });
    try {
      expect(sidecar.limiter.limitConfig()?.domains).toEqual(["shop"]);
    } finally {
      await sidecar.stop();
    }
  });

  it("reloads the auth file on reload() (SIGHUP): a good file applies, a bad one keeps the old", async () => {
    const bank = () => rpc["gw-shop"]!.check({ items: [{ key: "bank/user=r", cost: 1 }] });
    expect((await callError(bank())).code).toBe(grpc.status.PERMISSION_DENIED);
    writeFileSync(
      authPath,
      authFileText().replace(
        "{identity: gw-shop, domains: [shop]}",
        "{identity: gw-shop, domains: [shop, bank]}",
      ),
    );
    expect(server.reload()).toBe(true);
    expect((await bank()).results[0]!.allowed).toBe(true);
    writeFileSync(authPath, `${authFileText()}\nunknown: 1\n`);
    expect(server.reload()).toBe(false);
    expect((await bank()).results[0]!.allowed).toBe(true);
    writeFileSync(authPath, authFileText());
    expect(server.reload()).toBe(true);
    expect((await callError(bank())).code).toBe(grpc.status.PERMISSION_DENIED);
    // Two reloads swapped a file in, one was refused; the first load at start is not a reload.
    const metrics = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    expect(metrics).toContain('shardlimit_auth_reloads_total{result="ok"} 2');
    expect(metrics).toContain('shardlimit_auth_reloads_total{result="error"} 1');
  });

  it("hands each caller the limits of its domains only; operators all of them", async () => {
    const all = await rpc.ops!.getLimits({});
    expect(all.sources).toHaveLength(1);
    expect(all.sources[0]!.text).toContain("domain: bank");
    const shop = await rpc.peek!.getLimits({});
    expect(shop.sources).toHaveLength(1);
    expect(shop.sources[0]!.text).toContain("domain: shop");
    expect(shop.sources[0]!.text).not.toContain("bank");
    const bank = await rpc["gw-bank"]!.getLimits({});
    expect(bank.sources[0]!.text).toContain("domain: bank");
    expect(bank.sources[0]!.text).not.toContain("shop");
    // `peek` may read limits and nothing else.
    const err = await callError(rpc.peek!.check({ items: [{ key: "shop/user=u1", cost: 1 }] }));
    expect(err.details).toBe('Check refused for identity "peek": it may check in no domain');
  });
});

describe("serve's safe defaults", () => {
  it("--limits-read authenticated refuses anonymous GetLimits even without an auth file; other calls stay open", async () => {
    const server = await startLoopbackServer(writeConfig(AUTHZ_CONFIG), {
      serve: { limitsRead: "authenticated" },
    });
    const anon = tokenClient(server.grpcPort);
    const withToken = tokenClient(server.grpcPort, "ignored-without-an-auth-file");
    try {
      const err = await callError(anon.getLimits({}));
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(err.details).toBe('GetLimits refused for identity "anonymous" (--limits-read authenticated)');
      expect((await withToken.check({ items: [{ key: "shop/user=a", cost: 1 }] })).results[0]!.allowed).toBe(
        true,
      );
    } finally {
      anon.close();
      withToken.close();
      await server.shutdown();
    }
  });

  it("--no-reflection answers reflection UNIMPLEMENTED; by default it is served", async () => {
    const reflect = async (reflection: boolean) => {
      const server = await startLoopbackServer(writeConfig(AUTHZ_CONFIG), { serve: { reflection } });
      const c = new grpc.Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
      try {
        return await new Promise<number>((resolve) => {
          const call = c.makeBidiStreamRequest(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            (b: Buffer) => b,
            (b: Buffer) => b,
          );
          call.on("data", () => {
            resolve(grpc.status.OK);
            call.cancel();
          });
          call.on("error", (e: grpc.ServiceError) => resolve(e.code));
          // list_services = "" (field 7): any answer means the service is there.
          call.write(Buffer.from([0x3a, 0x00]));
        });
      } finally {
        c.close();
        await server.shutdown();
      }
    };
    expect(await reflect(true)).toBe(grpc.status.OK);
    expect(await reflect(false)).toBe(grpc.status.UNIMPLEMENTED);
  });

  it("warns of a plaintext server without an auth file listening beyond loopback, and only then", () => {
    expect(openWarning({ grpcHost: "0.0.0.0" })).toMatch(
      /anyone who reaches the port can report or refund any tenant's quota.*--auth-file.*--tls-cert/,
    );
    expect(openWarning({ grpcHost: "0.0.0.0", authFile: "auth.yaml" })).toBeUndefined();
    expect(openWarning({ grpcHost: "127.0.0.1" })).toBeUndefined();
    expect(openWarning({ grpcHost: "::1" })).toBeUndefined();
    expect(
      openWarning({ grpcHost: "0.0.0.0", tls: { cert: "c.pem", key: "k.pem", clientAuth: "none" } }),
    ).toBeUndefined();
  });
});
