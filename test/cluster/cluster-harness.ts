import { systemClock } from "../../src/core/clock.js";
import type { CheckResult, ClusterView } from "../../src/protocol/messages.js";
import { type CallMetadata, connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { type ClientTls, clientTls } from "../../src/security/tls.js";
import {
  type IssuedCert,
  type LeafOptions,
  LOOPBACK_NAMES,
  makeTestPki,
  type TestPki,
} from "../../src/testkit/certs.js";
import { ensureBuilt } from "../../src/testkit/cli.js";
import { ownerIn } from "../../src/testkit/cluster-view.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { httpGet } from "../../src/testkit/http.js";
import { type ServerProcess as ServeProcess, serverProcess, writeConfig } from "../../src/testkit/serve.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * One `shardlimit serve --etcd` process of the cluster, on fixed ports (so a restart keeps them),
 * with a client to it. `child` is the running process (undefined before the first start).
 */
export interface ServerProcess extends ServeProcess {
  rpc: RateLimiterRpc;
}

export interface ClusterHarness {
  readonly etcd: EtcdProcess;
  readonly servers: ServerProcess[];
  readonly configPath: string;
  readonly prefix: string;
  /** Starts (or restarts) server `id` and waits until it logs that it serves. */
  start(id: string): Promise<ServerProcess>;
  /** Starts every server and waits until the cluster has settled. */
  startAll(): Promise<void>;
  /** One `Check` of `key` for `cost` through server `via`; an item error is thrown. */
  check(via: string, key: string, cost: number, deadlineMs?: number): Promise<CheckResult>;
  /** Sends `signal` and waits for the process to exit. */
  kill(id: string, signal: NodeJS.Signals): Promise<void>;
  server(id: string): ServerProcess;
  /** The cluster view as server `id` answers it. */
  view(id: string): Promise<ClusterView>;
  /** The member id that owns `shardKey` in `view`. */
  ownerIn(view: ClusterView, shardKey: string): string;
  /** Waits until every running server answers /readyz 200 and they all serve one generation. */
  settled(timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
  /** With `tls`: the certificates in use (re-issue them in place to rotate). */
  readonly tls: ClusterTls | undefined;
}

/** A cluster with TLS everywhere: each server's own certificate, the test client's, etcd's. */
export interface ClusterTls {
  readonly pki: TestPki;
  /** Each server's certificate (`--tls-cert`/`--tls-key`), by id. */
  readonly servers: Map<string, IssuedCert>;
  /** The names on the servers' certificates (for `reissue`). */
  readonly serverNames: (id: string) => LeafOptions;
  /** The certificate the harness's clients present; their files are re-read every `reloadMs`. */
  readonly client: IssuedCert;
  /** The harness's clients' TLS sources, by server id. */
  readonly clientSources: Map<string, ClientTls>;
  readonly reloadMs: number;
}

export interface ClusterHarnessOptions {
  servers: number;
  config: string;
  leaseTtlSeconds?: number;
  extraArgs?: string[];
  /**
   * TLS on every link: clients to servers and server to server with `--tls-client-auth require`
   * (mutual TLS), and etcd over TLS with client certificates and user/password auth. Files are
   * checked for rotation every `reloadMs` (default 500) by servers and the harness's clients.
   */
  tls?: {
    reloadMs?: number;
    /**
     * One DNS name on every server's certificate instead of their addresses (as in Kubernetes):
     * servers run with `--peer-server-name` and the harness's clients check that name.
     */
    sharedName?: string;
  };
  /** More arguments for one server (its own `--token-file`). */
  argsOf?: (id: string) => string[];
  /** Sent on the harness's own calls (an operator's token under an auth file). */
  metadata?: CallMetadata;
}

/**
 * A real cluster for tests: one etcd and N `shardlimit serve --etcd` processes of the built CLI,
 * on free loopback ports, with helpers to find owners, kill and restart servers, and wait for the
 * cluster to settle. Always `stop()` it (afterAll).
 */
export async function startClusterHarness(opts: ClusterHarnessOptions): Promise<ClusterHarness> {
  ensureBuilt();
  let tls: ClusterTls | undefined;
  if (opts.tls) {
    const pki = makeTestPki();
    const shared = opts.tls.sharedName;
    const serverNames = (id: string): LeafOptions => ({
      ...(shared !== undefined ? { dns: [shared] } : LOOPBACK_NAMES),
      uris: [`spiffe://shardlimit.test/server/${id}`],
    });
    tls = {
      pki,
      servers: new Map(
        Array.from({ length: opts.servers }, (_, i) => [
          `s${i + 1}`,
          pki.ca.issue(`s${i + 1}`, serverNames(`s${i + 1}`)),
        ]),
      ),
      serverNames,
      client: pki.client,
      clientSources: new Map(),
      reloadMs: opts.tls.reloadMs ?? 500,
    };
  }
  const etcdCert = tls?.pki.ca.issue("etcd", LOOPBACK_NAMES);
  const etcd = await startEtcd(
    tls && etcdCert
      ? {
          tls: { ca: tls.pki.ca.caFile, cert: etcdCert.cert, key: etcdCert.key, client: tls.client },
          auth: { password: "harness-secret" },
        }
      : {},
  );
  const configPath = writeConfig(opts.config);
  const prefix = `/t${Date.now().toString(36)}/`;
  const servers: ServerProcess[] = [];
  for (let i = 0; i < opts.servers; i++) {
    const id = `s${i + 1}`;
    const own = tls?.servers.get(id);
    const tlsArgs =
      tls && own
        ? [
            ...etcd.accessArgs,
            ...["--tls-cert", own.cert, "--tls-key", own.key, "--tls-ca", tls.pki.ca.caFile],
            ...["--tls-client-auth", "require", "--tls-reload-interval", String(tls.reloadMs)],
            ...(opts.tls?.sharedName !== undefined ? ["--peer-server-name", opts.tls.sharedName] : []),
          ]
        : [];
    const p = await serverProcess({
      id,
      configPath,
      etcdUrl: etcd.url,
      prefix,
      leaseTtlSeconds: opts.leaseTtlSeconds ?? 2,
      extraArgs: [...(opts.extraArgs ?? []), ...tlsArgs, ...(opts.argsOf?.(id) ?? [])],
      cli: "built",
      readyTimeoutMs: 20_000,
    });
    const channelOptions = { "grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 500 };
    let rpc: RateLimiterRpc;
    if (tls) {
      const sec = clientTls(
        {
          ca: tls.pki.ca.caFile,
          cert: tls.client.cert,
          key: tls.client.key,
          pollMs: tls.reloadMs,
          serverName: opts.tls?.sharedName,
        },
        { clock: systemClock, log: { info: () => {}, error: (o, m) => console.error(m, o) } },
      );
      tls.clientSources.set(id, sec);
      rpc = connect(
        p.address,
        { ...channelOptions, ...sec.options },
        systemClock,
        sec.credentials,
        opts.metadata,
      );
    } else rpc = connect(p.address, channelOptions, undefined, undefined, opts.metadata);
    servers.push(Object.assign(p, { rpc }));
  }
  const server = (id: string) => {
    const s = servers.find((x) => x.id === id);
    if (!s) throw new Error(`no server ${id}`);
    return s;
  };

  const h: ClusterHarness = {
    tls,
    etcd,
    servers,
    configPath,
    prefix,
    server,
    async start(id) {
      const s = server(id);
      await s.start();
      return s;
    },
    async startAll() {
      await Promise.all(servers.map((s) => h.start(s.id)));
      await h.settled();
    },
    async check(via, key, cost, deadlineMs = 5000) {
      const r = await server(via).rpc.check({ items: [{ key, cost }] }, { deadlineMs });
      const res = r.results[0]!;
      if (res.error) throw new Error(`${key} via ${via}: ${res.error.message}`);
      return res;
    },
    async kill(id, signal) {
      const p = server(id).child;
      if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
      // No SIGKILL after a grace: a test of a graceful exit waits for it as long as it takes.
      p.child.kill(signal);
      await p.exited;
    },
    async view(id) {
      return server(id).rpc.getClusterView({}, { deadlineMs: 2000 });
    },
    ownerIn,
    async settled(timeoutMs = 20_000) {
      let generation = 0;
      await waitFor(
        "every running server ready on one generation",
        async () => {
          const up = servers.filter(
            (s) => s.child && s.child.child.exitCode === null && !s.child.child.signalCode,
          );
          const gens = new Set<number>();
          for (const s of up) {
            if ((await httpGet(`http://127.0.0.1:${s.httpPort}/readyz`)).status !== 200) return false;
            const v = await h.view(s.id);
            if (v.members.length !== up.length) return false;
            gens.add(v.generation);
          }
          generation = [...gens][0] ?? 0;
          return gens.size === 1;
        },
        timeoutMs,
        50,
      );
      return generation;
    },
    async stop() {
      await Promise.all(servers.map((s) => h.kill(s.id, "SIGKILL")));
      for (const s of servers) s.rpc.close();
      for (const c of tls?.clientSources.values() ?? []) c.source.close();
      await etcd.destroy();
    },
  };
  return h;
}
