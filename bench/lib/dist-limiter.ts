import path from "node:path";
import { pathToFileURL } from "node:url";
import type { ReportRequest } from "../../src/protocol/messages.js";
import { BENCH_CONFIG } from "./wire.js";

/**
 * The server's request path as it runs in production: tsc's output in dist/ (`npm run build`),
 * not src/ through tsx, whose esbuild transform wraps every closure in a `__name` call
 * (keepNames) and made closures on the hot path look several times dearer than they are.
 * `BENCH_DIST=<dir>` loads another build instead (an older commit's, to compare in one session).
 */
const DIST = process.env.BENCH_DIST
  ? pathToFileURL(`${path.resolve(process.env.BENCH_DIST)}/`)
  : new URL("../../dist/", import.meta.url);

/**
 * A standalone Limiter on the bench config, and the gRPC codecs of its methods, from dist/ (or
 * from the build in `distDir`, e.g. an older commit's, to compare two in one process).
 */
export async function distLimiter(maxCounters?: number, distDir?: string, cluster = false) {
  const base = distDir === undefined ? DIST : pathToFileURL(`${path.resolve(distDir)}/`);
  const dist = (f: string) => import(new URL(f, base).href);
  const { compileSources } = (await dist("config/load.js")) as typeof import("../../src/config/load.js");
  const { systemClock } = (await dist("core/clock.js")) as typeof import("../../src/core/clock.js");
  const { Engine } = (await dist("core/engine.js")) as typeof import("../../src/core/engine.js");
  const { DEFAULT_INPUT_LIMITS } = (await dist(
    "protocol/input-limits.js",
  )) as typeof import("../../src/protocol/input-limits.js");
  const { RATE_LIMITER_SERVICE, serviceDefinition } = (await dist(
    "protocol/proto.js",
  )) as typeof import("../../src/protocol/proto.js");
  const { Limiter } = (await dist("server/limiter.js")) as typeof import("../../src/server/limiter.js");
  const { PromMetrics } = (await dist("server/metrics.js")) as typeof import("../../src/server/metrics.js");
  const { StandaloneOwnership } = (await dist(
    "server/ownership.js",
  )) as typeof import("../../src/server/ownership.js");

  const engine = new Engine(maxCounters === undefined ? {} : { maxCounters });
  // `cluster`: ownership as a cluster member has it (every key's slice looked up in the
  // assignment), here the one member of a one-slice assignment, so every key is still served.
  let ownership: import("../../src/server/ownership.js").Ownership = new StandaloneOwnership("bench");
  if (cluster) {
    const { ClusterOwnership } = (await dist(
      "cluster/cluster-ownership.js",
    )) as typeof import("../../src/cluster/cluster-ownership.js");
    const { Assignment } = (await dist(
      "keyspace/assignment.js",
    )) as typeof import("../../src/keyspace/assignment.js");
    const member = new ClusterOwnership({ selfId: "bench", clock: systemClock, handoffTimeoutMs: 1000 });
    member.update(
      new Assignment(1, [{ id: "bench", address: "bench:1" }], Uint32Array.of(0), Uint16Array.of(0)),
    );
    ownership = member;
  }
  const limiter = new Limiter({
    engine,
    clock: systemClock,
    config: compileSources([{ file: "bench.yaml", text: BENCH_CONFIG }]),
    ownership,
    limits: { ...DEFAULT_INPUT_LIMITS },
    metrics: new PromMetrics({ counters: () => engine.size, clients: () => 0, ready: () => true }),
  });
  const service = serviceDefinition(RATE_LIMITER_SERVICE);
  const codec = (method: string) => {
    const d = service[method]!;
    return {
      decode: d.requestDeserialize as (b: Buffer) => unknown,
      encode: d.responseSerialize as (m: unknown) => Buffer,
    };
  };
  const report = codec("ReportAndGetPolicy");
  const check = codec("Check");
  return {
    engine,
    limiter,
    /** The server's ReportAndGetPolicy on one request's bytes: decode, count, answer, encode. */
    report: (bytes: Buffer): Buffer =>
      report.encode(limiter.reportAndGetPolicy(report.decode(bytes) as ReportRequest)),
    /** The server's Check on one request's bytes. */
    check: (bytes: Buffer): Buffer => check.encode(limiter.check(check.decode(bytes) as never)),
  };
}
