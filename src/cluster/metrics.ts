import client from "prom-client";
import type { ClusterHooks } from "./node.js";

export interface ClusterGauges {
  generation: () => number;
  slicesOwned: () => number;
  rangesAwaitingHandoff: () => number;
  standbyCopies: () => number;
}

/** Cluster metrics on `registry`; returns the hooks the cluster node calls. */
export function clusterMetrics(registry: client.Registry, gauges: ClusterGauges): ClusterHooks {
  const r = [registry];
  new client.Gauge({
    name: "shardlimit_assignment_generation",
    help: "Generation of the assignment this server serves in",
    registers: r,
    collect() {
      this.set(gauges.generation());
    },
  });
  new client.Gauge({
    name: "shardlimit_slices_owned",
    help: "Slices of the key space this server owns",
    registers: r,
    collect() {
      this.set(gauges.slicesOwned());
    },
  });
  new client.Gauge({
    name: "shardlimit_ranges_awaiting_handoff",
    help: "Ranges given to this server that wait for their previous owner's counters",
    registers: r,
    collect() {
      this.set(gauges.rangesAwaitingHandoff());
    },
  });
  new client.Gauge({
    name: "shardlimit_standby_entries",
    help: "Standby copies of counters this server keeps for the members whose buddy it is",
    registers: r,
    collect() {
      this.set(gauges.standbyCopies());
    },
  });
  const lag = new client.Histogram({
    name: "shardlimit_assignment_propagation_seconds",
    help: "From the assigner's write of an assignment to this server serving it (wall clocks)",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: r,
  });
  const handoff = new client.Counter({
    name: "shardlimit_handoff_counters_total",
    help: "Counters handed over on planned moves: sent, received, or lost (receiver unreachable)",
    labelNames: ["direction"],
    registers: r,
  });
  const forwarded = new client.Counter({
    name: "shardlimit_forwarded_parts_total",
    help: "Check and ShouldRateLimit parts passed to their owners, by outcome of the call",
    labelNames: ["result"],
    registers: r,
  });
  const replicated = new client.Counter({
    name: "shardlimit_replicated_counters_total",
    help: "Counters sent to this server's buddy as standby copies, by outcome of the call (failed ones are sent again)",
    labelNames: ["result"],
    registers: r,
  });
  const takeovers = new client.Counter({
    name: "shardlimit_standby_takeovers_total",
    help: "Ranges of a dead member taken over from its buddy's standby copies (one per dead member and generation)",
    registers: r,
  });
  const restored = new client.Counter({
    name: "shardlimit_standby_restored_counters_total",
    help: "Counters restored from standby copies when a dead member's ranges were taken over",
    registers: r,
  });
  return {
    onReplicated: (_to, n, ok) => replicated.inc({ result: ok ? "ok" : "error" }, n),
    onStandbyRestored: (_from, n) => {
      takeovers.inc();
      restored.inc(n);
    },
    onAssignment: (_a, lagMs) => {
      if (lagMs !== undefined && lagMs >= 0) lag.observe(lagMs / 1000);
    },
    onHandoffSent: (_to, n, ok) => handoff.inc({ direction: ok ? "sent" : "lost" }, n),
    onHandoffReceived: (_from, n) => handoff.inc({ direction: "received" }, n),
    onForward: (_owner, parts, ok) => forwarded.inc({ result: ok ? "ok" : "error" }, parts),
  };
}
