/**
 * The scenarios of `shardlimit bench`, in running order. Apart from run.ts so the CLI can build
 * its commands without loading the load-test code (and the packages only it needs).
 */
export const SCENARIOS = ["accuracy", "throughput", "sync", "failover", "scale", "baseline"] as const;
export type ScenarioName = (typeof SCENARIOS)[number];
