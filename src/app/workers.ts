import { type ChildProcess, spawn } from "node:child_process";
import { createServer, type Server as HttpServer } from "node:http";
import { hostname } from "node:os";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../core/clock.js";
import { type PrivateEtcd, startPrivateEtcd } from "./private-etcd.js";

/** A worker that crashes more often than this within RESTART_WINDOW_MS takes the server down. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
/** etcd prefix of a standalone server's embedded cluster (its private etcd holds nothing else). */
export const WORKERS_PREFIX = "/shardlimit-workers/";

export interface WorkersOptions {
  workers: number;
  /** How to start one `shardlimit serve` process: node, its flags, the CLI script, `serve` and the flags given. */
  command: { exec: string; args: readonly string[] };
  grpcHost: string;
  grpcPort: number;
  httpHost: string;
  httpPort: number;
  /** Cluster mode: the workers join this etcd. Standalone (absent): a private etcd on loopback. */
  etcd?: readonly string[];
  /** The base of the workers' member ids (`--id`); default hostname-grpcport. */
  id?: string;
  /** `host:port`: worker i advertises host:(port + i). */
  advertiseAddress?: string;
}

export interface RunningWorkers {
  /** The supervisor's HTTP port: /healthz, /readyz (every worker ready), /metrics (all, labelled). */
  readonly httpPort: number;
  /** Each worker's ports as it reported them (over IPC, when serving). */
  workers(): { index: number; id: string; pid: number | undefined; grpcPort?: number; httpPort?: number }[];
  /** SIGTERM (or the signal given) to every worker; resolves with the exit code for the whole server. */
  shutdown(signal?: NodeJS.Signals): Promise<number>;
  /** Forwards SIGHUP (reload) to every worker. */
  reload(): void;
  /** Resolves when the server must end on its own (a worker failing too often, etcd gone): the exit code. */
  readonly failed: Promise<number>;
}

interface Worker {
  index: number;
  restarts: number[];
  restartsTotal: number;
  id: string;
  child?: ChildProcess;
  exited?: Promise<number | null>;
  grpcPort?: number;
  httpPort?: number;
  serving: boolean;
}

/** A port of worker `i` given the one asked for: consecutive from it, or any free port for 0. */
function portOf(base: number, i: number): number {
  return base === 0 ? 0 : base + i;
}

/**
 * `serve --workers N`: N `shardlimit serve` processes on this host, each a cluster member with
 * its own slices (gRPC on --grpc-port + i, HTTP on a free port each: --http-port + 1 + i would
 * meet the default --grpc-port), joined through --etcd or,
 * standalone, through a private etcd on loopback, with the assigner in one of them (any member may
 * campaign). This process supervises: its own HTTP port answers /readyz only when every worker is
 * ready, /metrics with every worker's metrics labelled `worker`; SIGTERM drains them all; a worker
 * that crashes is started again under its member id (its ranges restored from its buddy's standby
 * copies, as a member restarted in a cluster), unless it crashes more than MAX_RESTARTS times in a
 * minute: then the server exits 1.
 */
export async function startWorkers(
  opts: WorkersOptions,
  log: Logger,
  clock: Clock = systemClock,
): Promise<RunningWorkers> {
  const standalone = opts.etcd === undefined;
  const baseId = opts.id ?? `${hostname()}-${opts.grpcPort}`;
  // Made before the HTTP port opens: a /readyz or /metrics while the private etcd starts sees
  // workers not yet serving (503), not an array still to be declared.
  const workers: Worker[] = Array.from({ length: opts.workers }, (_, index) => ({
    index,
    restarts: [],
    restartsTotal: 0,
    id: `${baseId}-w${index}`,
    serving: false,
  }));
  const http = await listenSupervisor(opts, () => workers);
  let etcd: PrivateEtcd | undefined;
  try {
    etcd = standalone ? await startPrivateEtcd(clock, log) : undefined;
  } catch (err) {
    http.close();
    throw err;
  }
  const etcdUrls = opts.etcd ?? [etcd!.url];
  const advertise = opts.advertiseAddress?.match(/^(.*):(\d+)$/);
  let stopping = false;
  let fail: (code: number) => void = () => {};
  const failed = new Promise<number>((resolve) => {
    fail = resolve;
  });

  const argsOf = (w: Worker): string[] => [
    ...opts.command.args,
    "--workers",
    "1",
    "--grpc-port",
    String(portOf(opts.grpcPort, w.index)),
    "--http-port",
    "0",
    "--id",
    w.id,
    ...(advertise ? ["--advertise-address", `${advertise[1]}:${Number(advertise[2]) + w.index}`] : []),
    // Standalone: the embedded cluster ends with the server (it keeps nothing, as today), so a
    // SIGTERM does not wait for slices to move to workers that are leaving too.
    ...(standalone ? ["--etcd", etcdUrls.join(","), "--prefix", WORKERS_PREFIX, "--drain-timeout", "0"] : []),
  ];

  const launch = (w: Worker, onServing: () => void, onEarlyExit: (code: number | null) => void) => {
    w.serving = false;
    w.grpcPort = undefined;
    w.httpPort = undefined;
    const child = spawn(opts.command.exec, argsOf(w), {
      // The IPC channel closes when this process dies, however it dies: the worker then stops.
      stdio: ["ignore", "pipe", "inherit", "ipc"],
      env: { ...process.env, SHARDLIMIT_WORKER: String(w.index) },
    });
    w.child = child;
    w.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    // The workers' log lines go out as they are (each carries `worker`).
    createInterface({ input: child.stdout! }).on("line", (line) => {
      process.stdout.write(`${line}\n`);
    });
    // A worker serving says its ports over the IPC channel (src/cli/serve.ts), whatever its
    // --log-level lets through: not from its log, which `--log-level warn` leaves without them.
    child.on("message", (m: unknown) => {
      const ports = (m as { serving?: { grpcPort?: unknown; httpPort?: unknown } } | null)?.serving;
      if (w.serving || typeof ports?.grpcPort !== "number" || typeof ports.httpPort !== "number") return;
      w.grpcPort = ports.grpcPort;
      w.httpPort = ports.httpPort;
      w.serving = true;
      onServing();
    });
    void w.exited.then((code) => {
      if (w.child !== child) return;
      w.child = undefined;
      if (stopping) return;
      if (!w.serving) return onEarlyExit(code);
      // A crash: start it again, unless it keeps crashing.
      const now = clock.elapsed();
      w.restarts = [...w.restarts.filter((t) => now - t < RESTART_WINDOW_MS), now];
      if (w.restarts.length > MAX_RESTARTS) {
        log.error(
          { worker: w.index, code },
          `worker crashed ${MAX_RESTARTS + 1} times within a minute: stopping`,
        );
        fail(1);
        return;
      }
      // Under the same id: a member back before its lease expired takes its ranges from the
      // standby copies its buddy holds. (A new id would sort next to the old one and could become
      // the old member's buddy in the next assignment, which holds no copies: counts lost.)
      w.restartsTotal++;
      log.error(
        { worker: w.index, code, id: w.id, restarts: w.restartsTotal },
        "worker exited unexpectedly: starting it again",
      );
      launch(
        w,
        () =>
          log.info(
            { worker: w.index, id: w.id, pid: w.child?.pid, grpcPort: w.grpcPort, httpPort: w.httpPort },
            "worker restarted",
          ),
        (c) => {
          log.error({ worker: w.index, code: c }, "restarted worker failed before serving: stopping");
          fail(1);
        },
      );
    });
  };

  const shutdown = async (signal: NodeJS.Signals = "SIGTERM"): Promise<number> => {
    stopping = true;
    const codes = await Promise.all(
      workers.map((w) => {
        w.child?.kill(signal);
        return w.exited ?? Promise.resolve(0);
      }),
    );
    await etcd?.stop();
    http.close();
    http.closeAllConnections();
    return codes.every((c) => c === 0) ? 0 : 1;
  };

  // All started at once; the server is up when every one serves, and fails if any exits first.
  const allServing = new Promise<void>((resolve, reject) => {
    let up = 0;
    for (const w of workers)
      launch(
        w,
        () => {
          if (++up === workers.length) resolve();
        },
        (code) => reject(new Error(`worker ${w.index} exited (code ${code}) before serving`)),
      );
  });
  const etcdGone = etcd?.exited.then((code) => {
    if (stopping) return;
    log.error({ code }, "the private etcd exited: stopping");
    fail(1);
  });
  void etcdGone;
  try {
    await allServing;
  } catch (err) {
    await shutdown();
    throw err;
  }
  const port = (http.address() as { port: number }).port;
  log.info(
    {
      httpPort: port,
      mode: standalone ? "standalone" : "cluster",
      ...(etcd ? { etcd: etcd.url } : {}),
      workers: workers.map((w) => ({
        worker: w.index,
        id: w.id,
        pid: w.child?.pid,
        grpcPort: w.grpcPort,
        httpPort: w.httpPort,
      })),
    },
    "shardlimit workers serving",
  );
  return {
    httpPort: port,
    workers: () =>
      workers.map((w) => ({
        index: w.index,
        id: w.id,
        pid: w.child?.pid,
        grpcPort: w.grpcPort,
        httpPort: w.httpPort,
      })),
    shutdown,
    reload: () => {
      for (const w of workers) w.child?.kill("SIGHUP");
    },
    failed,
  };
}

async function fromWorker(w: Worker, path: string): Promise<Response | undefined> {
  if (!w.serving || w.child === undefined || w.httpPort === undefined) return undefined;
  try {
    return await fetch(`http://127.0.0.1:${w.httpPort}${path}`, { signal: AbortSignal.timeout(2000) });
  } catch {
    return undefined;
  }
}

/** The supervisor's HTTP port: liveness of its own, readiness and metrics of all the workers. */
function listenSupervisor(opts: WorkersOptions, workers: () => readonly Worker[]): Promise<HttpServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (path === "/readyz") {
      void Promise.all(workers().map((w) => fromWorker(w, "/readyz"))).then((answers) => {
        const notReady = answers.flatMap((a, i) => (a?.ok ? [] : [i]));
        if (notReady.length === 0) res.writeHead(200, { "content-type": "text/plain" }).end("ready\n");
        else
          res
            .writeHead(503, { "content-type": "text/plain" })
            .end(`not ready: worker${notReady.length > 1 ? "s" : ""} ${notReady.join(", ")}\n`);
      });
      return;
    }
    if (path === "/metrics") {
      void Promise.all(
        workers().map(async (w) => {
          const r = await fromWorker(w, "/metrics");
          return r?.ok ? await r.text() : undefined;
        }),
      ).then((texts) => {
        res
          .writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" })
          .end(mergeMetrics(texts));
      });
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found: /healthz, /readyz, /metrics\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.httpPort, opts.httpHost, () => resolve(server));
  });
}

const SAMPLE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?(\s.*)$/;

/**
 * Prometheus text from every worker as one exposition: each family's HELP and TYPE once, its
 * samples from each worker with a `worker` label (worker i is texts[i]; undefined: not answering).
 */
export function mergeMetrics(texts: readonly (string | undefined)[]): string {
  const families = new Map<string, { meta: string[]; samples: string[] }>();
  texts.forEach((text, worker) => {
    if (text === undefined) return;
    let family: { meta: string[]; samples: string[] } | undefined;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const meta = line.match(/^# (HELP|TYPE) (\S+)/);
      if (meta) {
        const name = meta[2]!;
        let f = families.get(name);
        if (!f) {
          f = { meta: [], samples: [] };
          families.set(name, f);
        }
        if (f.meta.length < 2 && !f.meta.some((x) => x.startsWith(`# ${meta[1]} `))) f.meta.push(line);
        family = f;
        continue;
      }
      if (line.startsWith("#")) continue;
      const m = line.match(SAMPLE);
      if (!m) continue;
      const labels = m[2] ? `worker="${worker}",${m[2]}` : `worker="${worker}"`;
      const sample = `${m[1]}{${labels}}${m[3]}`;
      if (family) family.samples.push(sample);
      else families.set(m[1]!, { meta: [], samples: [sample] });
    }
  });
  let out = "";
  for (const f of families.values()) {
    for (const m of f.meta) out += `${m}\n`;
    for (const s of f.samples) out += `${s}\n`;
  }
  return out;
}
