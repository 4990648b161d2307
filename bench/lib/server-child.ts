/**
 * A server in its own process, for the gRPC benchmarks, started by spawn-server.ts:
 *
 *   node --import tsx bench/lib/server-child.ts serve <config.yaml>   a real shardlimit server
 *   node --import tsx bench/lib/server-child.ts echo                  the transport floor
 *
 * `echo` is a bare grpc-js server on the same method paths that neither decodes the request nor
 * does any work: it answers each call with fixed response bytes the parent sends (of the size the
 * real server answers). Same load generator, same sizes: it is the baseline the real server's
 * figures are a ratio of.
 *
 * Talks to its parent over the IPC channel: sends {type:"ready"} once serving, answers
 * {type:"stats"} with its own CPU time and event-loop utilisation, and on {type:"stop"} shuts down
 * and exits. {type:"profile-start"} and {type:"profile-stop", file} run V8's sampling CPU profiler
 * over just that window (no start-up in it) and write a .cpuprofile.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { constants, monitorEventLoopDelay, PerformanceObserver, performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { grpcFrame } from "../../src/protocol/fast-encode.js";
import type { ServerTlsOptions } from "../../src/security/tls.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { rawMethod } from "../../src/testkit/raw-method.js";
import { respondGrpc } from "./respond-grpc.js";

export interface ChildStats {
  type: "stats";
  /** process.cpuUsage(): user and system microseconds of the whole process (all its threads). */
  cpuUserUs: number;
  cpuSystemUs: number;
  /** performance.eventLoopUtilization(): ms the loop was active / idle. */
  eluActiveMs: number;
  eluIdleMs: number;
  heapUsed: number;
  rss: number;
  counters: number;
  /** Garbage collection pauses on the main thread since start: minor (scavenge) and major (mark). */
  gcMinorMs: number;
  gcMajorMs: number;
  gcMinorCount: number;
  gcMajorCount: number;
  /** Longest GC pause since the last stats request. */
  gcMaxPauseMs: number;
  /** Longest event-loop delay since the last stats request (a timer that fired late by this). */
  loopDelayMaxMs: number;
}

const gc = { minorMs: 0, majorMs: 0, minorCount: 0, majorCount: 0, maxPauseMs: 0 };
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
    gc.maxPauseMs = Math.max(gc.maxPauseMs, e.duration);
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
      gc.minorMs += e.duration;
      gc.minorCount++;
    } else {
      gc.majorMs += e.duration;
      gc.majorCount++;
    }
  }
}).observe({ entryTypes: ["gc"] });

export interface EchoSetup {
  type: "echo";
  /** Method path -> base64 of the response bytes to answer with. */
  responses: Record<string, string>;
}

const send = (m: unknown) => process.send!(m);

/** BENCH_SERVER_TLS: the server's TLS (ServerTlsOptions as JSON), set by spawnServer's `tls`. */
async function serve(configPath: string) {
  const tls = process.env.BENCH_SERVER_TLS;
  const server = await startLoopbackServer(configPath, {
    logLevel: "warn",
    tls: tls ? (JSON.parse(tls) as ServerTlsOptions) : undefined,
  });
  return {
    grpcPort: server.grpcPort,
    httpPort: server.httpPort,
    counters: () => server.engine.size,
    stop: () => server.shutdown(),
  };
}

/** The floor of node:http2 itself: gRPC framing by hand, no grpc-js (SHARDLIMIT_RAW_ECHO=1). */
async function rawEcho(setup: EchoSetup) {
  const http2 = await import("node:http2");
  const frames = new Map<string, Buffer>();
  for (const [path, b64] of Object.entries(setup.responses)) {
    frames.set(path, grpcFrame(Buffer.from(b64, "base64")));
  }
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    const frame = frames.get(headers[":path"] as string);
    stream.on("data", () => {});
    stream.on("end", () => {
      if (!frame) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", "grpc-status": "12" },
          { endStream: true },
        );
        return;
      }
      respondGrpc(stream, frame);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address() as { port: number };
  return {
    grpcPort: addr.port,
    httpPort: 0,
    counters: () => 0,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function echo(setup: EchoSetup) {
  if (process.env.SHARDLIMIT_RAW_ECHO === "1") return rawEcho(setup);
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
  const byService = new Map<string, Record<string, grpc.MethodDefinition<Buffer, Buffer>>>();
  const handlers = new Map<string, grpc.UntypedServiceImplementation>();
  for (const [path, b64] of Object.entries(setup.responses)) {
    const [, service, method] = path.split("/") as [string, string, string];
    const res = Buffer.from(b64, "base64");
    const def = byService.get(service) ?? {};
    def[method] = rawMethod(path);
    byService.set(service, def);
    const impl = handlers.get(service) ?? {};
    impl[method] = ((_call: unknown, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, res)) as grpc.handleUnaryCall<Buffer, Buffer>;
    handlers.set(service, impl);
  }
  for (const [service, def] of byService)
    server.addService(def as grpc.ServiceDefinition, handlers.get(service)!);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    grpcPort,
    httpPort: 0,
    counters: () => 0,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

if (!process.send) {
  process.stderr.write("server-child: run it with spawn-server.ts (it needs an IPC channel)\n");
  process.exit(2);
}
const mode = process.argv[2];
const running =
  mode === "serve"
    ? await serve(process.argv[3]!)
    : await echo(
        await new Promise<EchoSetup>((resolve) => process.once("message", (m: EchoSetup) => resolve(m))),
      );

const profiler = new Session();
export type ProfileKind = "cpu" | "heap" | "alloc";
let profiling: ProfileKind = "cpu";

process.on("message", (m: { type: string }) => {
  if (m.type === "stats") {
    const cpu = process.cpuUsage();
    const elu = performance.eventLoopUtilization();
    const mem = process.memoryUsage();
    const stats: ChildStats = {
      type: "stats",
      cpuUserUs: cpu.user,
      cpuSystemUs: cpu.system,
      eluActiveMs: elu.active,
      eluIdleMs: elu.idle,
      heapUsed: mem.heapUsed,
      rss: mem.rss,
      counters: running.counters(),
      gcMinorMs: gc.minorMs,
      gcMajorMs: gc.majorMs,
      gcMinorCount: gc.minorCount,
      gcMajorCount: gc.majorCount,
      gcMaxPauseMs: gc.maxPauseMs,
      loopDelayMaxMs: loopDelay.max / 1e6,
    };
    gc.maxPauseMs = 0;
    loopDelay.reset();
    send(stats);
  } else if (m.type === "profile-start") {
    // V8's sampling CPU profiler (every 250 µs), or its sampling heap profiler (every 4 KiB
    // allocated), by allocating stack: "heap" keeps what outlived the young generation (still
    // live, or freed by a major GC); "alloc" keeps every sampled allocation.
    profiling = (m as { kind?: ProfileKind }).kind ?? "cpu";
    const domain = profiling === "cpu" ? "Profiler" : "HeapProfiler";
    profiler.connect();
    profiler.post(`${domain}.enable`, () => {
      if (profiling === "cpu") {
        profiler.post("Profiler.setSamplingInterval", { interval: 250 }, () =>
          profiler.post("Profiler.start", () => send({ type: "profile-started" })),
        );
      } else {
        profiler.post(
          "HeapProfiler.startSampling",
          {
            samplingInterval: 4096,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: profiling === "alloc",
          } as object,
          () => send({ type: "profile-started" }),
        );
      }
    });
  } else if (m.type === "profile-stop") {
    const file = (m as { file?: string }).file!;
    const method = profiling === "cpu" ? "Profiler.stop" : "HeapProfiler.stopSampling";
    profiler.post(method, (err, res) => {
      if (!err) writeFileSync(file, JSON.stringify((res as { profile: unknown }).profile));
      profiler.disconnect();
      send({ type: "profile-stopped", file: err ? undefined : file });
    });
  } else if (m.type === "stop") {
    running.stop().finally(() => process.exit(0));
  }
});

send({ type: "ready", grpcPort: running.grpcPort, httpPort: running.httpPort });
