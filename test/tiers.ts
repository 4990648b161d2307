/**
 * Tests in three tiers, each a vitest project (`npm test` runs all three; `npm run test:unit` and
 * so on, one). A file is in the tier of the heaviest thing it does:
 * - e2e: the whole CLI as a user runs it, with every process (`shardlimit bench --quick` renders
 *   its report in Chromium; the packed package installed in an empty project).
 * - integration: starts real processes: etcd, `shardlimit serve` / `assigner` / `sidecar`,
 *   redis-server.
 * - unit: everything else: in memory, or in-process servers on loopback ports; seconds in all.
 * The lists name files; `test/tiers.test.ts` fails when a file outside them starts a process, so
 * a new process test cannot slip into the unit tier.
 */
/**
 * Chaos scenarios that take over ~30 s each (issue 11): process tests run by `npm run test:chaos`
 * only, in a project of their own (`chaos`) that vitest.config.ts adds when asked for: the
 * command line names test/chaos, or SHARDLIMIT_CHAOS=1. Plain `npm test` leaves them out.
 */
export const CHAOS = ["test/chaos/drains.test.ts", "test/chaos/hotkey.test.ts", "test/chaos/kill.test.ts"];
export const E2E = ["test/loadtest/bench.test.ts", "test/package.test.ts"];
export const INTEGRATION = [
  "test/chaos/cutoff.test.ts",
  "test/client/cluster-client.test.ts",
  "test/client/grpc.test.ts",
  "test/cluster/assigner.test.ts",
  "test/cluster/cluster.test.ts",
  "test/cluster/leadership.test.ts",
  "test/cluster/membership.test.ts",
  "test/cluster/node-partition.test.ts",
  "test/cluster/prefix-view.test.ts",
  "test/cluster/rebalance-live.test.ts",
  "test/loadtest/load.test.ts",
  "test/server/drain.test.ts",
  "test/server/fuzz.test.ts",
  "test/server/process.test.ts",
  "test/testkit/etcd.test.ts",
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
