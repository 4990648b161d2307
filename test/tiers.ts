/**
 * Tests in three tiers, each a vitest project (`npm test` runs all three; `npm run test:unit` and
 * so on, one). A file is in the tier of the heaviest thing it does:
 * - e2e: the whole CLI as a user runs it, with every process (`shardlimit bench --quick` renders
 *   its report in Chromium; the packed package installed in an empty project; the container
 *   image laid out from the Dockerfile and run).
 * - integration: starts real processes: etcd, `shardlimit serve` / `assigner` / `sidecar`,
 *   redis-server, helm, openssl.
 * - unit: everything else: in memory, or in-process servers on loopback ports; seconds in all.
 * The lists name files; `test/tiers.test.ts` fails when a file outside them starts a process, so
 * a new process test cannot slip into the unit tier.
 */
export const E2E = ["test/deploy/image-layout.test.ts", "test/package.test.ts"];

/**
 * `shardlimit bench --quick` end to end (every load scenario, small, with its HTML report in
 * Chromium: ~2.5 min of both CPUs, and its sync knee judges rates the machine must sustain): not in
 * `npm test`, which CI keeps under 15 minutes; `npm run test:bench` runs it (vitest.config.ts adds
 * the `bench` project when SHARDLIMIT_BENCH_TESTS=1 or a command line names it).
 */
export const BENCH = ["test/loadtest/bench.test.ts", "test/loadtest/sync-compare.test.ts"];
export const INTEGRATION = [
  "test/app/workers.test.ts",
  "test/chaos/cutoff.test.ts",
  "test/cli/inspect.test.ts",
  "test/client/cluster-client.test.ts",
  "test/client/grpc.test.ts",
  "test/cluster/assigner.test.ts",
  "test/cluster/cluster-tls.test.ts",
  "test/cluster/cluster.test.ts",
  "test/cluster/global-tier-loopback.test.ts",
  "test/cluster/global-tier-tls.test.ts",
  "test/cluster/leadership.test.ts",
  "test/cluster/limits-etcd-auth.test.ts",
  "test/cluster/limits-etcd.test.ts",
  "test/cluster/limits-switch.test.ts",
  "test/cluster/membership.test.ts",
  "test/cluster/node-partition.test.ts",
  "test/cluster/pool-status.test.ts",
  "test/cluster/prefix-view.test.ts",
  "test/cluster/rebalance-live.test.ts",
  "test/cluster/standby.test.ts",
  "test/deploy/helm-chart.test.ts",
  "test/deploy/helm-pods.test.ts",
  "test/deploy/readme-certs.test.ts",
  "test/loadtest/load.test.ts",
  "test/server/drain.test.ts",
  "test/server/envoy-process.test.ts",
  "test/server/fuzz.test.ts",
  "test/server/lean-interop.test.ts",
  "test/server/process.test.ts",
  "test/security/tls-server.test.ts",
  "test/security/mtls-identity.test.ts",
  "test/security/authz-cluster.test.ts",
  "test/sidecar/rlqs-cluster.test.ts",
  "test/testkit/etcd.test.ts",
  "test/testkit/temp-dir.test.ts",
];

/**
 * Long chaos scenarios (real processes, 30 s or more each, timing-sensitive): not in `npm test`;
 * `npm run test:chaos` runs them in a project of their own (`chaos`), one file at a time, which
 * vitest.config.ts adds when asked for: SHARDLIMIT_CHAOS=1 or a command line naming test/chaos
 * (`npx vitest run test/chaos/peers.test.ts`).
 */
export const CHAOS = [
  "test/chaos/drains.test.ts",
  "test/chaos/dup-client-ids.test.ts",
  "test/chaos/hotkey.test.ts",
  "test/chaos/kill.test.ts",
  "test/chaos/etcd-compaction.test.ts",
  "test/chaos/global-regions.test.ts",
  "test/chaos/lost-answers.test.ts",
  "test/chaos/peers.test.ts",
];

/**
 * Issue 16 asks for the server tests on both transports. `npm test` runs everything on the default
 * (lean); these files, whose servers run in-process (src/testkit/in-process.ts reads
 * SHARDLIMIT_TRANSPORT), run once more on grpc-js in the `unit grpc-js` project (vitest.config.ts).
 * lean.test.ts and the interop test pick each transport themselves.
 */
export const GRPC_JS_AGAIN = [
  "test/app/sidecar-inspect.test.ts",
  "test/server/authz.test.ts",
  "test/server/check-wait.test.ts",
  "test/server/envoy-options.test.ts",
  "test/server/envoy.test.ts",
  "test/server/fair-share.test.ts",
  "test/server/input-limits.test.ts",
  "test/server/inspect-forward.test.ts",
  "test/server/inspect.test.ts",
  "test/server/ops.test.ts",
  "test/server/pool-grpc.test.ts",
  "test/server/pool-authz.test.ts",
  "test/server/ratelimiter.test.ts",
  "test/server/readme-inference.test.ts",
  "test/server/smoke.test.ts",
  "test/server/tickets.test.ts",
  "test/server/tracing.test.ts",
  "test/sidecar/rlqs-auth.test.ts",
  "test/sidecar/rlqs-service.test.ts",
];

/** What a test file calls when it starts a real process (etcd, the CLI, redis-server). */
export const PROCESS_STARTERS = [
  "startCli(",
  "spawnCli(",
  "runCli(",
  "ensureBuilt(",
  "serverProcess(",
  "startEtcd(",
  "etcdPerSuite(",
  "startRedis(",
  "startCluster",
  "spawnChild(",
  "node:child_process",
];
