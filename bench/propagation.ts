/**
 * Assignment propagation under load: how long from the assigner's write of a new generation to
 * every server serving it, with Check traffic flowing and slices (and their counters) moving at
 * each generation. Real etcd, real server processes; this process plays the assigner (servers run
 * with --no-assigner), moving a few random slices every --everyMs.
 *
 *   tsx bench/propagation.ts      (npm run bench:propagation)
 *
 * Options: --servers 3  --generations 100  --everyMs 200  --moves 4  --inFlight 32  --keys 10000
 */

import { Etcd3 } from "etcd3";
import { assignmentKey } from "../src/cluster/assignment-view.js";
import { seededRandom } from "../src/core/random.js";
import { Assignment } from "../src/keyspace/assignment.js";
import { encodeAssignment } from "../src/keyspace/assignment-codec.js";
import { initialAssignment, withoutPrevious } from "../src/keyspace/placement.js";
import { connect } from "../src/protocol/rpc.js";
import { startEtcd } from "../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, writeConfig } from "../src/testkit/serve.js";
import {
  latencyHistogram,
  machine,
  num,
  parseArgs,
  printTable,
  summarize,
  writeResult,
} from "./lib/common.js";

const opts = parseArgs({ servers: 3, generations: 100, everyMs: 200, moves: 4, inFlight: 32, keys: 10_000 });
const m = machine();
console.log(`propagation benchmark: ${m.cpuModel}, ${m.nproc} CPUs, node ${m.node}, git ${m.git}`);
console.log(
  `${opts.servers} servers, ${opts.generations} generations every ${opts.everyMs} ms moving ${opts.moves} slices each, Check load at ${opts.inFlight} in flight\n`,
);

const config = writeConfig(
  "domain: b\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 1000000000 }\n",
);

const etcd = await startEtcd();
const prefix = "/bench/";
interface Installed {
  generation: number;
  lagMs: number;
}
const installs = new Map<string, Installed[]>();
const handoffs: { ms: number; counters: number }[] = [];
const servers: ServerProcess[] = [];
for (let i = 0; i < opts.servers; i++) {
  const id = `s${i + 1}`;
  installs.set(id, []);
  const s = await serverProcess({
    id,
    configPath: config,
    etcdUrl: etcd.url,
    prefix,
    leaseTtlSeconds: null,
    extraArgs: ["--no-assigner", "--load-interval", "0"],
    // The built CLI (npm run bench:propagation builds it). They serve once this process, the
    // assigner, writes the first assignment below; started is enough.
    cli: "built",
    ready: "spawned",
    onLine(line) {
      try {
        const l = JSON.parse(line);
        if (l.msg === "assignment installed" && typeof l.lagMs === "number")
          installs.get(id)!.push({ generation: l.generation, lagMs: l.lagMs });
        if (l.msg === "handed slices over") handoffs.push({ ms: l.ms, counters: l.counters });
      } catch {}
    },
  });
  await s.start();
  servers.push(s);
}

const client = new Etcd3({ hosts: etcd.url });
const write = (a: Assignment) => client.put(assignmentKey(prefix)).value(encodeAssignment(a)).exec();
// Members register as they start; the first assignment names them all.
const members = servers.map((s) => ({ id: s.id, address: s.address }));
let current = initialAssignment(1, members, Date.now());
await new Promise((r) => setTimeout(r, 1500));
await write(current);
await new Promise((r) => setTimeout(r, 1000));

const rpcs = servers.map((s) => connect(s.address));
let running = true;
let calls = 0;
let errors = 0;
const latency = latencyHistogram();
const load = Promise.all(
  Array.from({ length: opts.inFlight }, async (_, w) => {
    const rnd = seededRandom(w + 1);
    while (running) {
      const key = `b/k=key-${Math.floor(rnd() * opts.keys)}`;
      const t0 = performance.now();
      try {
        const r = await rpcs[w % rpcs.length]!.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 });
        if (r.results[0]!.error) errors++;
      } catch {
        errors++;
      }
      latency.recordValue(Math.round((performance.now() - t0) * 1000));
      calls++;
    }
  }),
);

const rnd = seededRandom(42);
const started = performance.now();
for (let g = 0; g < opts.generations; g++) {
  await new Promise((r) => setTimeout(r, opts.everyMs));
  const owners = Uint16Array.from(current.owners);
  for (let k = 0; k < opts.moves; k++) {
    const s = Math.floor(rnd() * owners.length);
    owners[s] = (owners[s]! + 1 + Math.floor(rnd() * (members.length - 1))) % members.length;
  }
  current = new Assignment(
    current.generation + 1,
    current.members,
    current.starts,
    owners,
    withoutPrevious(current),
    Date.now(),
  );
  await write(current);
}
await new Promise((r) => setTimeout(r, 1000));
running = false;
await load;
const seconds = (performance.now() - started) / 1000;

// Per generation: the last server to install it sets its propagation time.
const perGen = new Map<number, number[]>();
for (const list of installs.values())
  for (const x of list) {
    if (x.generation < 2) continue;
    const l = perGen.get(x.generation) ?? [];
    l.push(x.lagMs);
    perGen.set(x.generation, l);
  }
const everywhere = [...perGen.values()].filter((l) => l.length === servers.length).map((l) => Math.max(...l));
const missed = opts.generations - everywhere.length;
everywhere.sort((a, b) => a - b);
const pct = (p: number) =>
  everywhere[Math.min(everywhere.length - 1, Math.floor(p * everywhere.length))] ?? Number.NaN;
const lat = summarize(latency);
const hand = handoffs.map((h) => h.ms).sort((a, b) => a - b);

printTable(
  [
    "generations",
    "on every server",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "target",
    "checks/s",
    "check errors",
    "check p99",
    "handoffs",
    "handoff p99 ms",
    "counters moved",
  ],
  [
    [
      opts.generations,
      everywhere.length,
      String(pct(0.5)),
      String(pct(0.9)),
      String(pct(0.99)),
      String(everywhere.at(-1)),
      "p99 < 1000 ms",
      Math.round(calls / seconds),
      errors,
      `${(lat.p99Us / 1000).toFixed(2)} ms`,
      handoffs.length,
      String(hand[Math.floor(0.99 * (hand.length - 1))] ?? 0),
      num(handoffs.reduce((s, h) => s + h.counters, 0)),
    ],
  ],
);
if (missed > 0) console.log(`(${missed} generations were superseded before every server logged them)`);
writeResult("propagation", {
  machine: m,
  options: opts,
  propagationMs: {
    p50: pct(0.5),
    p90: pct(0.9),
    p99: pct(0.99),
    max: everywhere.at(-1),
    n: everywhere.length,
  },
  load: { checksPerS: calls / seconds, errors, latency: lat },
  handoffs: {
    n: handoffs.length,
    p99Ms: hand[Math.floor(0.99 * (hand.length - 1))] ?? 0,
    counters: handoffs.reduce((s, h) => s + h.counters, 0),
  },
});
for (const r of rpcs) r.close();
client.close();
await Promise.all(servers.map((s) => s.stop("SIGKILL")));
await etcd.destroy();
process.exit(0);
