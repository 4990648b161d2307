import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../../src/core/clock.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { sha256 } from "../../src/security/identity.js";
import { clientTls } from "../../src/security/tls.js";
import { LOOPBACK_NAMES, makeTestPki, type TestPki } from "../../src/testkit/certs.js";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { httpGet } from "../../src/testkit/http.js";
import { type ServerProcess, serverProcess, writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * A region's link to the global tier, secured (issue 14), with real processes: a global tier
 * (one `shardlimit serve`) with TLS that asks for client certificates and an auth file naming
 * the regions allowed as gateways of the `global` domain; regional servers dialling it
 * (`--global-tier`):
 * - east: the same PKI, its server certificate (--tls-*) its identity there;
 * - west: its own PKI for its listener, the global tier's CA (--global-tier-ca), its token;
 * - rogue: the global tier's CA but a token the auth file grants nothing: refused, it keeps to
 *   limit / regions and says so in its log and metrics.
 */

const CONFIG = `domain: global
descriptors:
  - key: k
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000, global: true }
`;
const KEY = "global/k=v";
const silent = { info() {}, error() {} };

/** A gauge's value with exactly these labels, from a Prometheus exposition. */
function gauge(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("the global tier link over TLS with the server's identity", () => {
  let pki: TestPki;
  const servers: ServerProcess[] = [];
  const clients: RateLimiterRpc[] = [];
  const logs = new Map<string, string[]>();
  let global: ServerProcess;
  /** Token files of the regions that present one. */
  let tokens: { west: string; rogue: string };

  const start = async (id: string, extraArgs: string[]) => {
    const lines: string[] = [];
    logs.set(id, lines);
    const s = await serverProcess({
      id,
      configPath: writeConfig(CONFIG),
      cli: "built",
      extraArgs,
      onLine: (l) => lines.push(l),
    });
    servers.push(s);
    await s.start();
    return s;
  };
  const regional = (id: string, extraArgs: string[]) =>
    start(id, [
      "--global-tier",
      global.address,
      "--region",
      id,
      "--global-regions",
      "2",
      "--global-report-interval",
      "50",
      ...extraArgs,
    ]);
  /** Checks on `s`'s key, 20 a second, until `until` holds for its /metrics. */
  const driveUntil = async (
    rpc: RateLimiterRpc,
    s: ServerProcess,
    what: string,
    until: (m: string) => boolean,
  ) => {
    await waitFor(
      what,
      async () => {
        await rpc.check(
          { items: [{ key: KEY, cost: 1 }], atomic: false, generation: 0 },
          { deadlineMs: 2000 },
        );
        return until((await httpGet(`http://127.0.0.1:${s.httpPort}/metrics`)).body);
      },
      15_000,
      50,
    );
    return (await httpGet(`http://127.0.0.1:${s.httpPort}/metrics`)).body;
  };

  beforeAll(async () => {
    ensureBuilt();
    pki = makeTestPki();
    const dir = pki.ca.dir;
    const globalCert = pki.ca.issue("global", {
      ...LOOPBACK_NAMES,
      uris: ["spiffe://shardlimit.test/global"],
    });
    const token = (name: string, value: string) => {
      const file = path.join(dir, `${name}.token`);
      writeFileSync(file, value);
      return file;
    };
    const auth = path.join(dir, "global-auth.yaml");
    writeFileSync(
      auth,
      `tokens:
  region-west: ${sha256("west-secret").toString("hex")}
  region-rogue: ${sha256("rogue-secret").toString("hex")}
gateways:
  - {identity: "spiffe://shardlimit.test/region-east", domains: [global], may: [report, limits]}
  - {identity: region-west, domains: [global], may: [report, limits]}
`,
    );
    global = await start("global", [
      "--tls-cert",
      globalCert.cert,
      "--tls-key",
      globalCert.key,
      "--tls-ca",
      pki.ca.caFile,
      "--tls-client-auth",
      "request",
      "--auth-file",
      auth,
    ]);
    tokens = { west: token("west", "west-secret"), rogue: token("rogue", "rogue-secret") };
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => s.stop()));
    await killAllCli();
  });

  it("same CA: the region's certificate is its identity at the global tier; the link connects", async () => {
    const east = pki.ca.issue("region-east", {
      ...LOOPBACK_NAMES,
      uris: ["spiffe://shardlimit.test/region-east"],
    });
    const s = await regional("region-east", [
      "--tls-cert",
      east.cert,
      "--tls-key",
      east.key,
      "--tls-ca",
      pki.ca.caFile,
    ]);
    const sec = clientTls({ ca: pki.ca.caFile }, { clock: systemClock, log: silent });
    const rpc = connect(s.address, sec.options, undefined, sec.credentials);
    clients.push(rpc);
    const m = await driveUntil(
      rpc,
      s,
      "east's global key to be connected",
      (t) => gauge(t, `shardlimit_global_mode{key="${KEY}",mode="connected"}`) === 1,
    );
    expect(gauge(m, 'shardlimit_global_link{state="connected"}')).toBe(1);
    expect(gauge(m, 'shardlimit_global_keys{mode="connected"}')).toBe(1);
    sec.source.close();
  }, 30_000);

  it("another PKI: --global-tier-ca verifies the global tier, the token is the identity; the link connects", async () => {
    const west = pki.wrongCa.issue("region-west", LOOPBACK_NAMES);
    const s = await regional("region-west", [
      "--tls-cert",
      west.cert,
      "--tls-key",
      west.key,
      "--tls-ca",
      pki.wrongCa.caFile,
      "--global-tier-ca",
      pki.ca.caFile,
      "--token-file",
      tokens.west,
    ]);
    const sec = clientTls({ ca: pki.wrongCa.caFile }, { clock: systemClock, log: silent });
    const rpc = connect(s.address, sec.options, undefined, sec.credentials);
    clients.push(rpc);
    const m = await driveUntil(
      rpc,
      s,
      "west's global key to be connected",
      (t) => gauge(t, `shardlimit_global_mode{key="${KEY}",mode="connected"}`) === 1,
    );
    expect(gauge(m, 'shardlimit_global_link{state="connected"}')).toBe(1);
    sec.source.close();
  }, 30_000);

  it("an identity the global tier grants nothing is refused: limit / regions, said in the log and metrics", async () => {
    const s = await regional("region-rogue", [
      "--global-tier-ca",
      pki.ca.caFile,
      "--token-file",
      tokens.rogue,
    ]);
    const rpc = connect(s.address);
    clients.push(rpc);
    const m = await driveUntil(
      rpc,
      s,
      "rogue's link to be refused",
      (t) =>
        gauge(t, 'shardlimit_global_link{state="refused"}') === 1 &&
        gauge(t, `shardlimit_global_mode{key="${KEY}",mode="fallback"}`) === 1,
    );
    // limit / --global-regions
    expect(gauge(m, `shardlimit_global_share_per_second{key="${KEY}"}`)).toBe(500);
    const refused = logs
      .get("region-rogue")!
      .map((l) => JSON.parse(l) as { msg?: string; err?: string })
      .find((l) => l.msg?.startsWith("global tier: link refused"));
    expect(refused?.err).toMatch(/PERMISSION_DENIED.*region-rogue/);
  }, 30_000);
});
