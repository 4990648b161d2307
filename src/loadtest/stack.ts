import { connect } from "../protocol/rpc.js";
import type { CliOptions } from "../testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../testkit/etcd.js";
import { type ServerProcess, serverProcess, waitAllReady, writeConfig } from "../testkit/serve.js";
import { waitFor } from "../testkit/wait.js";

/**
 * Limits for the load keys `bench/k=<n>`: far above what any key is offered, so all is admitted;
 * and `bench/acc=<v>`, 1000/s, for accuracy over real processes.
 */
export const BENCH_LIMITS = `domain: bench
descriptors:
  - key: k
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000000 }
  - key: acc
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 1000 }
  - key: frag
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100, local_allowance: 3 }
  - key: win
    rate_limit: { window: 10s, requests_per_unit: 10000 }
  - key: tokens
    rate_limit: { algorithm: token_bucket, unit: minute, requests_per_unit: 100000, cost_unit: tokens }
`;

/** etcd and N `shardlimit serve --etcd` processes on loopback, started and stopped together. */
export interface Stack {
  readonly etcd: EtcdProcess;
  readonly servers: ServerProcess[];
  readonly configPath: string;
  addresses(): string[];
  pids(): number[];
  /** Starts one more server (a join) and waits until it owns slices and every server is ready. */
  addServer(): Promise<ServerProcess>;
  stop(): Promise<void>;
}

export async function startStack(opts: {
  servers: number;
  config?: string;
  extraArgs?: string[];
  /** gRPC on this loopback address (e.g. 127.0.0.2, to tell one cluster from another by host). */
  grpcHost?: string;
  /** Added to each server's environment. */
  env?: NodeJS.ProcessEnv;
  cli?: CliOptions["cli"];
  /** Also wait until every server owns slices (default: ready is enough). */
  allOwners?: boolean;
}): Promise<Stack> {
  const etcd = await startEtcd();
  const configPath = writeConfig(opts.config ?? BENCH_LIMITS);
  const prefix = `/bench-${Date.now().toString(36)}/`;
  const servers: ServerProcess[] = [];
  const newServer = () =>
    serverProcess({
      id: `s${servers.length + 1}`,
      configPath,
      etcdUrl: etcd.url,
      prefix,
      extraArgs: ["--rebalance-interval", "0", ...(opts.extraArgs ?? [])],
      ...(opts.grpcHost !== undefined ? { grpcHost: opts.grpcHost } : {}),
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.cli !== undefined ? { cli: opts.cli } : {}),
    });
  try {
    for (let i = 0; i < opts.servers; i++) servers.push(await newServer());
    await Promise.all(servers.map((s) => s.start()));
    await waitAllReady(servers);
    if (opts.allOwners) await waitOwners(servers[0]!.address, servers.length);
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop("SIGKILL")));
    await etcd.destroy();
    throw err;
  }
  return {
    etcd,
    servers,
    configPath,
    addresses: () => servers.map((s) => s.address),
    pids: () => [etcd.pid(), ...servers.map((s) => s.pid())].filter((p): p is number => p !== undefined),
    async addServer() {
      const s = await newServer();
      servers.push(s);
      await s.start();
      await waitOwners(servers[0]!.address, servers.length);
      await waitAllReady(servers);
      return s;
    },
    async stop() {
      await Promise.all(servers.map((s) => s.stop("SIGTERM")));
      await etcd.destroy();
    },
  };
}

/** Waits until the cluster's assignment, as `address` serves it, gives slices to `n` members. */
export async function waitOwners(address: string, n: number, timeoutMs = 20_000): Promise<void> {
  const rpc = connect(address);
  try {
    await waitFor(
      `the assignment to reach ${n} owners`,
      async () => {
        const view = await rpc.getClusterView({ knownGeneration: 0 }, { deadlineMs: 2000 });
        return new Set(view.slices.map((s) => s.owner)).size >= n;
      },
      timeoutMs,
      100,
    );
  } finally {
    rpc.close();
  }
}

/** An existing cluster to drive (`--target`): nothing is started or stopped; only this process's CPU is known. */
export function targetStack(addresses: string[]): Stack {
  return {
    etcd: undefined as unknown as EtcdProcess,
    servers: [],
    configPath: "",
    addresses: () => addresses,
    pids: () => [],
    addServer: () => Promise.reject(new Error("--target: servers are not this harness's to start")),
    async stop() {},
  };
}
