import { GatewayLimiter } from "../client/gateway-limiter.js";
import { decodeKey } from "../config/key.js";
import { compileSources } from "../config/load.js";
import { ManualClock } from "../core/clock.js";
import { seededRandom } from "../core/random.js";
import { EnvoyCode, type EnvoyDescriptor } from "../protocol/messages.js";
import { SimNetwork } from "./network.js";
import { SimCluster } from "./sim-cluster.js";
import { T0 } from "./simulation.js";

/**
 * Several flows of requests (tenants, priority classes) on the simulated cluster, each on its own
 * descriptor, decided either by batched gateways (the real GatewayLimiter, each request at a
 * random gateway) or synchronously by the key's owner over `ShouldRateLimit` (the real
 * EnvoyRateLimit). Deterministic for a seed, on one virtual clock.
 */

export interface Flow {
  /** The request's descriptor as a canonical key (`domain/k=v/...`), priority entry included. */
  descriptor: string;
  /** Requests per second at virtual ms `t` since traffic started. */
  rate: (t: number) => number;
}

export interface FlowsSpec {
  yaml: string;
  flows: Flow[];
  servers: number;
  /** Batched gateways the requests are spread over; 0: synchronous ShouldRateLimit calls. */
  gateways: number;
  seconds: number;
  seed: number;
  /** Width of the buckets of the per-flow series. */
  bucketMs?: number;
  /** Called once the cluster is up, before traffic (issue 14: backends that report load). */
  setup?: (sim: ReturnType<typeof simGateways>) => void;
  /** Called for each admitted request of flow `f` (issue 14: the work reaches the backends). */
  onAdmit?: (f: number) => void;
}

export interface FlowsRun {
  /** Per flow: requests offered and admitted per bucket since traffic started. */
  offered: number[][];
  admitted: number[][];
  bucketMs: number;
  wallMs: number;
}

export function simulateFlows(spec: FlowsSpec): FlowsRun {
  const started = performance.now();
  const sim = simGateways(spec.yaml, spec.servers, spec.gateways, spec.seed);
  const { random, clock, cluster, gateways } = sim;
  spec.setup?.(sim);
  const bucketMs = spec.bucketMs ?? 1000;
  const buckets = Math.ceil((spec.seconds * 1000) / bucketMs);
  const offered = spec.flows.map(() => new Array<number>(buckets).fill(0));
  const admitted = spec.flows.map(() => new Array<number>(buckets).fill(0));
  const end = T0 + spec.seconds * 1000;

  const requests = spec.flows.map((f) => {
    const d = decodeKey(f.descriptor);
    if (typeof d === "string") throw new Error(`flow ${f.descriptor}: ${d}`);
    const descriptor: EnvoyDescriptor = { entries: d.entries.map((e) => ({ key: e.key, value: e.value })) };
    return { domain: d.domain, descriptor };
  });
  /** ShouldRateLimit at the owner of the request's first limited descriptor, at once. */
  const sync = (f: number): boolean => {
    const { domain, descriptor } = requests[f]!;
    const req = { domain, descriptors: [descriptor], hitsAddend: 0 };
    const owner = cluster.servers.find((s) => s.up)!.envoy;
    const plan = owner.plan(req);
    const first = plan.limited[0];
    if (first === undefined) return true;
    const server = cluster.ownerOf(plan.active[first]!.shardKey);
    return server.envoy.shouldRateLimit(req).overallCode === EnvoyCode.OK;
  };
  const arrive = (f: number): void => {
    const t = clock.now() - T0;
    const rate = spec.flows[f]!.rate(t);
    if (rate > 0 && t >= 0) {
      const b = Math.min(buckets - 1, Math.floor(t / bucketMs));
      offered[f]![b]!++;
      const ok =
        spec.gateways === 0
          ? sync(f)
          : gateways[Math.floor(random() * spec.gateways)]!.decide(
              { domain: requests[f]!.domain, entries: requests[f]!.descriptor.entries },
              1,
            );
      if (ok) {
        admitted[f]![b]!++;
        spec.onAdmit?.(f);
      }
    }
    const next = rate > 0 ? (-Math.log(1 - random()) * 1000) / rate : 100;
    if (clock.now() + next < end) clock.after(next, () => arrive(f));
  };
  spec.flows.forEach((flow, f) => {
    const r = flow.rate(0);
    clock.after(1000 + (r > 0 ? (-Math.log(1 - random()) * 1000) / r : random() * 100), () => arrive(f));
  });
  clock.runUntil(end);
  for (const gw of gateways) gw.close();
  return { offered, admitted, bucketMs, wallMs: performance.now() - started };
}

/**
 * A simulated cluster of `servers` on `yaml`, and `gateways` started gateways (client ids gw0,
 * gw1...) over the in-memory network (0.25-0.5 ms each way, no loss), on one virtual clock that
 * starts a second before traffic does.
 */
export function simGateways(yaml: string, servers: number, gateways: number, seed: number) {
  const random = seededRandom(seed);
  const clock = new ManualClock(T0 - 1000);
  const config = compileSources([{ file: "sim.yaml", text: yaml }]);
  const cluster = new SimCluster(clock, config, servers);
  const net = new SimNetwork(clock, cluster, { delayMs: 0.25, jitterMs: 0.25, loss: 0, random });
  const addresses = cluster.servers.map((s) => s.member.address);
  const started = Array.from({ length: gateways }, (_, g) => {
    const gw = new GatewayLimiter({ servers: addresses, clientId: `gw${g}`, transport: net, clock, random });
    gw.start();
    return gw;
  });
  return { random, clock, cluster, gateways: started };
}
