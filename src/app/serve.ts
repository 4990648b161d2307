import type { Server as HttpServer } from "node:http";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { GrpcTransport } from "../client/grpc-transport.js";
import { connectEtcd } from "../cluster/etcd-client.js";
import { GlobalTier, globalTierMetrics } from "../cluster/global-tier.js";
import { EtcdLimitsSource, type LimitsInForce } from "../cluster/limits-source.js";
import { clusterMetrics } from "../cluster/metrics.js";
import { ClusterNode, type ClusterOptions } from "../cluster/node.js";
import { warmUpHandoff } from "../cluster/warm-up.js";
import { LimitRemovalError } from "../config/diff.js";
import { ConfigError } from "../config/errors.js";
import { rlqsConfigWatcher } from "../config/rlqs.js";
import type { LimitConfig } from "../config/types.js";
import { ConfigWatcher, type ConfigWatcherOptions } from "../config/watch.js";
import { type Clock, every, systemClock, TIMED_OUT, within } from "../core/clock.js";
import { Engine } from "../core/engine.js";
import { keyPoint } from "../keyspace/hash.js";
import { DEFAULT_INPUT_LIMITS, type InputLimits } from "../protocol/input-limits.js";
import { enableTracing } from "../protocol/tracing.js";
import type { AuthPolicy } from "../security/auth-file.js";
import { AuthFileWatcher } from "../security/auth-watch.js";
import { type ServerTlsOptions, serverTls } from "../security/tls.js";
import { bearerMetadata, TokenFile } from "../security/token-file.js";
import { Access } from "../server/access.js";
import { CheckWaits } from "../server/check-waits.js";
import { EnvoyRateLimit } from "../server/envoy.js";
import { DEFAULT_ENVOY_OPTIONS, type EnvoyOptions } from "../server/envoy-options.js";
import { DescriptorMetrics } from "../server/envoy-stats.js";
import { type GrpcServer, setServing, startGrpc, stopGrpc } from "../server/grpc.js";
import { startHttp } from "../server/http.js";
import { inspectEndpoint } from "../server/inspect.js";
import { DEFAULT_TRANSPORT, type Transport } from "../server/lean.js";
import { Limiter } from "../server/limiter.js";
import { PromMetrics, registerPoolMetrics } from "../server/metrics.js";
import { type Ownership, StandaloneOwnership } from "../server/ownership.js";
import { PeerService } from "../server/peer-service.js";
import { Router } from "../server/router.js";
import { RlqsService, registerRlqsMetrics } from "../sidecar/rlqs.js";
import { globalTierTransport } from "./global-link.js";
import { heapNote } from "./heap.js";

/** On SIGTERM in cluster mode, how long the drain may take: with the leave and gRPC's grace, under 30 s. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 15_000;
/** After the drain, how long leaving the cluster (leadership, lease revoke) may take. */
export const LEAVE_TIMEOUT_MS = 2000;

/** Counters visited per sweeper tick: ~0.3 ms; at one tick per 50 ms, 100k counters a second. */
const SWEEP_SLICE = 2000;

export interface ServeOptions {
  configPath: string;
  grpcHost: string;
  grpcPort: number;
  httpHost: string;
  httpPort: number;
  limits?: InputLimits;
  maxCounters?: number;
  /** How long SIGTERM waits for calls in flight before closing them. */
  shutdownGraceMs?: number;
  /** How often idle counters are swept. */
  sweepIntervalMs?: number;
  /** Join this cluster; standalone (owns every key) when absent. */
  cluster?: ClusterOptions;
  /** host:port other servers and gateways reach this one at (cluster mode); default host:grpcPort. */
  advertiseAddress?: string;
  /**
   * On SIGTERM in cluster mode, the deadline for slices to move away and be handed over (15 s by
   * default); leaving the cluster afterwards has LEAVE_TIMEOUT_MS more.
   */
  drainTimeoutMs?: number;
  /** Apply config reloads that remove a domain or a rule (refused by default). */
  allowLimitRemoval?: boolean;
  /** OpenTelemetry spans, from the tracer provider an SDK registered (protocol/tracing.ts). */
  tracing?: boolean;
  /** TLS on the gRPC port and on the links to peers (their certificates re-read on change). */
  tls?: ServerTlsOptions;
  /**
   * Where limits come from: `file` (default: `configPath`, watched) or `etcd` (cluster mode only:
   * the version pushed with `shardlimit limits push`, and runtime overrides; `configPath` unused).
   */
  limitsFrom?: "file" | "etcd";
  /**
   * The authorisation file (`--auth-file`): who may call what. Absent: everything is allowed.
   * Reloaded when it changes and on `reload()` (SIGHUP); a bad new file keeps the old one.
   */
  authFile?: string;
  /** This server's bearer token for its calls to peers (`--token-file`), re-read on change. */
  tokenFile?: string;
  /** `authenticated`: GetLimits refuses anonymous callers (`--limits-read`; default anyone). */
  limitsRead?: "anyone" | "authenticated";
  /** gRPC server reflection; default on (`--no-reflection`). */
  reflection?: boolean;
  /** How the hot methods are served: `lean` (server/lean.ts) or `grpc-js`; default DEFAULT_TRANSPORT. */
  transport?: Transport;
  /** envoyproxy/ratelimit's server options for ShouldRateLimit, and its per-limit statistics. */
  envoy?: ServeEnvoyOptions;
  /** Global limits: this server is a gateway of the global tier for its `global: true` keys. */
  global?: GlobalTierSettings;
  /** Serve Envoy's RLQS with the bucket mapping in this file (`rlqs:` section). */
  rlqsConfigPath?: string;
}

export interface ServeEnvoyOptions extends EnvoyOptions {
  /** MERGE_DOMAIN_CONFIG: a domain in several files is merged rather than refused. */
  readonly mergeDomains: boolean;
  /** Distinct keys `shardlimit_envoy_descriptor_hits_total` names (0: no per-limit statistics). */
  readonly descriptorMetricKeys: number;
}

/** Where the global tier is and who this region is there (`serve --global-tier --region`). */
export interface GlobalTierSettings {
  servers: string[];
  region: string;
  fallbackAfterMs?: number;
  regions?: number;
  reportIntervalMs?: number;
  /**
   * The global tier's CA, when it is another PKI than `tls.ca` (`--global-tier-ca`): TLS towards
   * it even without `tls`. Absent: the link uses this server's TLS (plaintext without).
   */
  ca?: string;
  /** The name the global tier's certificates carry (`--global-tier-server-name`). */
  serverName?: string;
}

export interface RunningServer {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly limiter: Limiter;
  readonly engine: Engine;
  /** Check requests waiting for units (max_wait_ms). */
  readonly checkWaits: CheckWaits;
  /** Cluster mode only. */
  readonly cluster: ClusterNode | undefined;
  /** With --global-tier only: this region's link to the global tier. */
  readonly globalTier: GlobalTier | undefined;
  /** Loads the config (and the auth file) again; false (old one kept) if either is invalid. */
  reload(): boolean;
  isReady(): boolean;
  shutdown(): Promise<void>;
}

/**
 * All wiring in one place: config watcher -> limiter and Envoy service -> router -> gRPC and HTTP
 * servers, metrics, the sweeper, readiness; in cluster mode also the cluster node (membership,
 * assignment, assigner, forwarding, handoff). Standalone when no cluster is given.
 */
export async function startServer(
  opts: ServeOptions,
  log: Logger,
  deps: { clock?: Clock; ownership?: Ownership } = {},
): Promise<RunningServer> {
  const clock = deps.clock ?? systemClock;
  const limits = opts.limits ?? DEFAULT_INPUT_LIMITS;
  if (opts.tracing) enableTracing();
  // In a cluster the engine indexes its counters by slice of the key space (each shard key hashed
  // once, when its counter is made), so a handoff takes a slice's counters without a full scan.
  // One value of the lease bound for the engine and for what a handoff may carry (PeerService).
  // Changed counters are tracked only when something takes them: the copies to the buddy.
  const replicating = opts.cluster !== undefined && (opts.cluster.replicateIntervalMs ?? 1) > 0;
  const engine = new Engine({
    maxCounters: opts.maxCounters,
    maxLeasesPerKey: limits.maxLeasesPerKey,
    pointOf: opts.cluster ? keyPoint : undefined,
    trackChanges: replicating,
  });
  let ready = false;
  let draining = false;
  let limiter: Limiter | undefined;
  let initialError: Error | undefined;
  // A bad RLQS mapping file (ConfigError naming the field) stops the start before anything runs.
  // Reloaded when it changes (and on SIGHUP); a bad new file is logged and the old mapping kept.
  let rlqsService: RlqsService | undefined;
  const rlqsWatcher =
    opts.rlqsConfigPath === undefined
      ? undefined
      : rlqsConfigWatcher({
          path: opts.rlqsConfigPath,
          clock,
          onSwap: (config) => {
            rlqsService?.setConfig(config);
            log.info(
              { rlqsConfig: opts.rlqsConfigPath, mappings: config.mappings.length },
              "rlqs config reloaded",
            );
          },
          onError: (err) =>
            log.error(
              {
                rlqsConfig: opts.rlqsConfigPath,
                err: err.message,
                problems: err instanceof ConfigError ? err.problems : undefined,
              },
              "rlqs config reload refused; the previous mapping stays in force",
            ),
        });
  const rlqsConfig = rlqsWatcher?.start();
  // First, so bad certificate files stop the start before anything else runs.
  const tls = opts.tls ? serverTls(opts.tls, { clock, log }) : undefined;

  const metrics = new PromMetrics({
    counters: () => engine.size,
    clients: () => engine.clients,
    ready: () => ready && !draining,
    // Read at scrape time; serving (and so scraping) starts after `waits` is made.
    checkWaiting: () => waits.size,
  });

  // What the limits in force are, published in the membership record (`status`) and `/readyz`.
  let inForce: LimitsInForce | undefined;
  // Set once the cluster node exists (the first limits are loaded before it).
  let publishTo: ClusterNode | undefined;
  const publishLimits = (state: LimitsInForce) => {
    inForce = state;
    publishTo?.publishLimits(state).catch((err: Error) => {
      log.warn({ err: err.message }, "cannot publish the limits in force to etcd");
    });
  };
  const fromEtcd = opts.limitsFrom === "etcd";
  if (fromEtcd && !opts.cluster) {
    tls?.source.close();
    rlqsWatcher?.stop();
    throw new Error("limits from etcd need cluster mode (--etcd)");
  }
  // The same swap and refusal for files (the watcher) and etcd (EtcdLimitsSource).
  const limitsEvents: ConfigWatcherOptions = {
    path: opts.configPath,
    clock,
    allowRemoval: opts.allowLimitRemoval ?? false,
    compile: { mergeDomains: opts.envoy?.mergeDomains ?? false },
    onSwap: (config: LimitConfig, diff) => {
      if (!fromEtcd) publishLimits({ version: 0, digest: config.version });
      metrics.setDomains(config.domains);
      if (limiter) {
        limiter.setConfig(config);
        metrics.configReloads.inc({ result: "ok" });
        // Every reload says what it changed, so a limit that vanished or moved is in the log.
        log.info({ domains: config.domains, rules: config.rules.length, ...diff }, "config reloaded");
      } else {
        initialConfig = config;
      }
    },
    onError: (err) => {
      if (!limiter) {
        initialError = err;
        return;
      }
      metrics.configReloads.inc({ result: "error" });
      log.error(
        {
          err: err.message,
          problems: err instanceof ConfigError ? err.problems : undefined,
          ...(err instanceof LimitRemovalError
            ? {
                hint: "to remove limits, restart the server with the new config, or run it with --allow-limit-removal",
              }
            : {}),
        },
        "config reload refused; the previous config keeps serving",
      );
    },
  };
  const watcher = fromEtcd ? undefined : new ConfigWatcher(limitsEvents);
  const limitsClient = fromEtcd ? connectEtcd(opts.cluster!.etcd, opts.cluster!.etcdAccess) : undefined;
  const etcdLimits = limitsClient
    ? new EtcdLimitsSource({
        client: limitsClient,
        prefix: opts.cluster!.prefix,
        clock,
        log,
        selfId: opts.cluster!.id,
        allowRemoval: opts.allowLimitRemoval ?? false,
        onStaged: publishLimits,
        onSwap: (config, diff, state) => {
          publishLimits(state);
          limitsEvents.onSwap(config, diff);
          if (limiter)
            log.info({ limitsVersion: state.version, digest: state.digest }, "limits version in force");
        },
        onRefused: (state, err) => {
          publishLimits(state);
          limitsEvents.onError(err);
        },
      })
    : undefined;
  const stopLimits = () => {
    watcher?.stop();
    rlqsWatcher?.stop();
    etcdLimits?.stop().catch(() => {});
    limitsClient?.close();
  };
  let initialConfig: LimitConfig | undefined;
  const started = watcher
    ? watcher.start()
    : await etcdLimits!.start().then(
        () => true,
        (err: Error) => {
          initialError = err;
          return false;
        },
      );
  if (!started || !initialConfig) {
    stopLimits();
    tls?.source.close();
    throw initialError ?? new Error(`cannot load config from ${opts.configPath}`);
  }
  let authFile: AuthFileWatcher | undefined;
  let authStarted = false;
  let tokenFile: TokenFile | undefined;
  let globalTransport: GrpcTransport | undefined;
  try {
    tokenFile = opts.tokenFile === undefined ? undefined : new TokenFile(opts.tokenFile, clock);
    // With this server's TLS (or the global tier's own CA) and its token; bad files stop the start.
    globalTransport =
      opts.global && globalTierTransport(opts.global, opts.tls, tls, tokenFile, { clock, log });
    if (opts.authFile !== undefined) {
      authFile = new AuthFileWatcher({
        path: opts.authFile,
        clock,
        onSwap: (policy: AuthPolicy) => {
          if (!authStarted) return; // the first load, logged with "shardlimit serving"
          metrics.authReloads.inc({ result: "ok" });
          log.info({ authFile: policy.file, ...authSummary(policy) }, "auth file reloaded");
        },
        onError: (err) => {
          metrics.authReloads.inc({ result: "error" });
          log.error(
            { err: err.message, problems: err instanceof ConfigError ? err.problems : undefined },
            "auth file reload refused; the previous auth file stays in force",
          );
        },
      });
      try {
        authFile.start();
        authStarted = true;
      } catch (err) {
        // Not the limit config's error (the CLI would say "the config is invalid").
        throw new Error(`the auth file ${opts.authFile} is invalid:\n${(err as Error).message}`);
      }
    }
  } catch (err) {
    stopLimits();
    tls?.source.close();
    authFile?.stop();
    globalTransport?.close();
    throw err;
  }
  const access = new Access({
    policy: () => authFile?.current,
    limitsRead: opts.limitsRead ?? "anyone",
    denied: (method, reason) => metrics.denied.inc({ method, reason }),
  });
  // The bound port replaces the requested one (0: any free port) once gRPC listens.
  let selfAddress = `${opts.grpcHost}:${opts.grpcPort}`;
  const node: ClusterNode | undefined = opts.cluster
    ? new ClusterNode({ limits, maxStandbyCopies: opts.maxCounters, ...opts.cluster }, engine, {
        clock,
        log,
        changed: replicating ? engine : undefined,
        channel: tls?.peers,
        metadata: tokenFile && bearerMetadata(tokenFile),
        pools: () => (limiter?.pools.snapshots(clock.now()) ?? []).filter((p) => p.backends > 0),
        global: () => globalTier?.status(),
        poolHandover: () => limiter?.pools,
        hooks: clusterMetrics(metrics.registry, {
          generation: (): number => node!.ownership.generation(),
          slicesOwned: () => node!.ownership.slicesOwned(),
          rangesAwaitingHandoff: () => node!.ownership.waiting().length,
          standbyCopies: () => node!.standbyStore.size,
        }),
      })
    : undefined;
  if (node && inForce) await node.publishLimits(inForce);
  publishTo = node;
  const ownership = node?.ownership ?? deps.ownership ?? new StandaloneOwnership(() => selfAddress, clock);
  // Global limits: the global tier is another shardlimit cluster, reached as a gateway over gRPC.
  const globalTier =
    opts.global && globalTransport
      ? new GlobalTier({
          ...opts.global,
          transport: globalTransport,
          clock,
          logger: {
            warn: (o, m) => log.warn(o, `global tier: ${m}`),
            info: (o, m) => log.info(o, `global tier: ${m}`),
          },
        })
      : undefined;
  if (globalTier) globalTierMetrics(metrics.registry, globalTier);
  limiter = new Limiter({
    engine,
    clock,
    config: initialConfig,
    ownership,
    limits,
    metrics,
    global: globalTier,
  });
  const current = limiter;
  registerPoolMetrics(metrics.registry, { snapshots: () => current.pools.snapshots(clock.now()) });
  const envoyOptions = opts.envoy ?? { ...DEFAULT_ENVOY_OPTIONS, descriptorMetricKeys: 0 };
  const descriptorMetrics =
    envoyOptions.descriptorMetricKeys > 0
      ? new DescriptorMetrics(
          metrics.registry,
          envoyOptions.descriptorMetricKeys,
          envoyOptions.nearLimitRatio,
        )
      : undefined;
  const envoy = new EnvoyRateLimit(
    {
      engine,
      clock,
      ownership,
      limits,
      metrics,
      global: globalTier,
      pools: current.pools,
      why: limiter.why,
      options: envoyOptions,
      ...(descriptorMetrics
        ? { descriptorMetrics, metricKey: (d, e) => current.config.metricKey?.(d, e) }
        : {}),
    },
    (domain, entries) => current.config.resolve(domain, entries),
    (domain) => current.config.domains.includes(domain),
  );

  const waits = new CheckWaits(
    {
      clock,
      maxWaitMs: limits.maxCheckWaitMs,
      maxPerKey: limits.maxCheckWaitersPerKey,
      maxTotal: limits.maxCheckWaiters,
    },
    { check: (req) => current.check(req), counterKeys: (req) => current.counterKeys(req) },
  );
  const router = new Router({ limiter, envoy, ownership, clock, forwarder: node?.forwarder, waits });
  const peer = node
    ? new PeerService({
        limiter,
        envoy,
        ownership,
        clock,
        limits,
        waits,
        receiveHandoff: (req) => node.handoff.receive(req),
        reclaim: (req) => node.reclaim(req),
        replicate: (req) => node.replicate(req),
        standby: (req) => node.standbyCopies(req),
      })
    : undefined;
  const isReady = () => ready && !draining && (node === undefined || node.ownership.ready());
  // RLQS: each stream a gateway client of this cluster, reaching the owners as gateways do (over
  // the peers' TLS when there is TLS, with this server's token when it has one): under an auth
  // file, this server's identity needs `report` and `limits` on the RLQS domains.
  const rlqsTransport =
    rlqsConfig &&
    new GrpcTransport(
      {},
      tls && { ...tls.peers, source: tls.source },
      tokenFile && bearerMetadata(tokenFile),
    );
  const rlqs =
    rlqsConfig &&
    new RlqsService({
      config: rlqsWatcher!.current,
      servers: () => [selfAddress],
      transport: rlqsTransport!,
      clock,
      log: { warn: (o, m) => log.warn(o, m), info: (o, m) => log.info(o, m) },
      metrics: registerRlqsMetrics(metrics.registry, () => rlqsService),
    });
  rlqsService = rlqs || undefined;

  let grpc: GrpcServer | undefined;
  let http: { server: HttpServer; port: number } | undefined;
  try {
    grpc = await startGrpc(
      {
        limiter,
        router,
        peer,
        metrics,
        rlqs: rlqs?.handle,
        // Inspect asked of a non-owner: the owner's answer, over the members' channel, bounded.
        askOwner: node && ((owner, key) => node.inspectAt(owner, key, INSPECT_OWNER_MS)),
        maxMessageBytes: limits.maxMessageBytes,
        onUnexpected: (method, err) => log.error({ err, method }, "unexpected error in request handler"),
        access: authFile || opts.limitsRead === "authenticated" ? access : undefined,
        reflection: opts.reflection ?? true,
        transport: opts.transport ?? DEFAULT_TRANSPORT,
      },
      opts.grpcHost,
      opts.grpcPort,
      tls?.server,
    );
    selfAddress = `${opts.grpcHost}:${grpc.port}`;
    http = await startHttp(
      {
        registry: metrics.registry,
        ready: isReady,
        log,
        detail: () => limitsDetail(inForce),
        // Operator-only: the HTTP port has no identities, so under an auth file /inspect is off
        // there and operators ask over gRPC (`shardlimit inspect --token-file`, `Inspect`).
        ...(opts.authFile === undefined ? { inspect: inspectEndpoint((key) => limiter.inspect(key)) } : {}),
      },
      opts.httpHost,
      opts.httpPort,
    );
    if (node) {
      const host = opts.grpcHost === "0.0.0.0" || opts.grpcHost === "::" ? hostname() : opts.grpcHost;
      selfAddress = opts.advertiseAddress ?? `${host}:${grpc.port}`;
      // Before joining (no slice yet, not ready): the first rebalance then runs warm code.
      const warm = await warmUpHandoff();
      log.debug({ counters: warm.counters, ms: Math.round(warm.ms) }, "handoff path warmed up");
      await node.start(selfAddress);
    }
  } catch (err) {
    // Close what did start (a port taken for HTTP leaves gRPC listening), or the failed process
    // would linger, half-started, instead of exiting with the error.
    stopLimits();
    tls?.source.close();
    authFile?.stop();
    globalTier?.close();
    globalTransport?.close();
    await node?.stop().catch(() => {});
    grpc?.server.forceShutdown();
    http?.server.close();
    http?.server.closeAllConnections();
    throw err;
  }

  // Small slices often: one turn of the event loop must stay well under a millisecond, or every
  // call in flight waits for it (50k counters in one slice stalled calls for ~15 ms).
  const sweeper = every(clock, opts.sweepIntervalMs ?? 50, () => {
    const removed = engine.sweep(clock.now(), SWEEP_SLICE);
    if (removed > 0) log.debug({ removed, counters: engine.size }, "swept idle counters");
  });

  globalTier?.start();
  ready = true;
  setServing(grpc.health, isReady());
  // In a cluster readiness follows the assignment and handoffs; gRPC health tells the same story.
  let serving = isReady();
  const healthTimer = every(clock, 250, () => {
    if (isReady() !== serving) {
      serving = !serving;
      setServing(grpc.health, serving);
    }
  });
  log.info(
    {
      grpcPort: grpc.port,
      httpPort: http.port,
      domains: initialConfig.domains,
      rules: initialConfig.rules.length,
      mode: node ? "cluster" : "standalone",
      ...(fromEtcd ? { limitsVersion: inForce?.version } : {}),
      ...(tls ? { tls: { clientAuth: opts.tls!.clientAuth, serial: tls.source.current().serial } } : {}),
      ...(node ? { id: opts.cluster!.id, address: selfAddress, generation: ownership.generation() } : {}),
      ...(authFile ? { authFile: opts.authFile, ...authSummary(authFile.current) } : {}),
      ...(opts.global ? { region: opts.global.region, globalTier: opts.global.servers } : {}),
      heap: heapNote(),
    },
    "shardlimit serving",
  );
  const open = openWarning(opts);
  if (open !== undefined) log.warn({ grpcHost: opts.grpcHost }, open);

  return {
    grpcPort: grpc.port,
    httpPort: http.port,
    limiter,
    engine,
    cluster: node,
    globalTier,
    checkWaits: waits,
    // Limits from etcd follow etcd's watch: only the auth file (and limit files) are re-read.
    reload: () => {
      const auth = authFile?.reload() ?? true;
      const rlqsMapping = rlqsWatcher?.reload() ?? true;
      return (watcher?.reload() ?? true) && auth && rlqsMapping;
    },
    isReady,
    async shutdown() {
      if (draining) return;
      draining = true;
      setServing(grpc.health, false);
      if (node) {
        // Still serving (forwarding moved keys) while the assigner moves the slices away and
        // their counters are handed to the new owners; then leave the cluster. Both steps talk to
        // etcd, whose calls hang rather than fail behind a partition, so each has a deadline of
        // its own: the whole shutdown must end inside Kubernetes' grace period (30 s by default),
        // or the SIGKILL that follows skips gRPC's grace for calls in flight too.
        const drainMs = opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
        log.info({ drainTimeoutMs: drainMs }, "shutting down: not ready, draining slices to other members");
        const t0 = clock.elapsed();
        const drained = await within(clock, drainMs, node.drain(drainMs), { ref: true }).catch(
          (err: Error) => {
            log.warn({ err: err.message }, "drain failed");
            return false;
          },
        );
        const ms = clock.elapsed() - t0;
        if (drained === true) log.info({ ms }, "drained");
        else {
          log.warn(
            {
              ms,
              slicesOwned: node.ownership.slicesOwned(),
              rangesAwaitingHandoff: node.ownership.waiting().length,
              reason:
                drained === TIMED_OUT
                  ? "deadline passed (etcd or the assigner unresponsive?)"
                  : "not drained",
            },
            "drain timed out; leaving anyway",
          );
        }
        const left = await within(clock, LEAVE_TIMEOUT_MS, node.stop(), { ref: true }).catch((err: Error) => {
          log.warn({ err: err.message }, "leaving the cluster failed");
          return undefined;
        });
        if (left === TIMED_OUT) {
          log.warn(
            { leaveTimeoutMs: LEAVE_TIMEOUT_MS },
            "could not leave the cluster in time (etcd unreachable?); the lease expires after its TTL",
          );
        }
      }
      log.info("shutting down: finishing calls in flight");
      // Checks still waiting are answered now, as an ordinary Check would be.
      waits.close();
      // RLQS streams end, their last counts sent to the owners (the channels close after gRPC's grace).
      rlqs?.close();
      sweeper.cancel();
      healthTimer.cancel();
      stopLimits();
      tls?.source.close();
      authFile?.stop();
      globalTier?.close();
      globalTransport?.close();
      await stopGrpc(grpc.server, opts.shutdownGraceMs ?? 5000, clock);
      rlqsTransport?.close();
      await new Promise<void>((resolve) => {
        http.server.close(() => resolve());
        http.server.closeAllConnections();
      });
      log.info("shut down");
    },
  };
}

/** What the auth file grants, in numbers, for the log. */
function authSummary(p: AuthPolicy) {
  return {
    tokens: p.tokens.size,
    members: p.spec.members.length,
    gateways: p.spec.gateways.length,
    operators: p.spec.operators.length,
    backends: p.spec.backends.length,
  };
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|\[::1\]|localhost)$/;

/**
 * The start-up warning of a server anyone on the network can use as they like: plaintext (no
 * `--tls-cert`), no `--auth-file`, listening beyond loopback. Undefined when it is not open.
 */
export function openWarning(opts: Pick<ServeOptions, "grpcHost" | "authFile" | "tls">): string | undefined {
  if (opts.tls !== undefined || opts.authFile !== undefined || LOOPBACK.test(opts.grpcHost)) return undefined;
  return (
    `gRPC listens on ${opts.grpcHost} in plaintext with no --auth-file: anyone who reaches the port can ` +
    "report or refund any tenant's quota, settle or release anyone's tickets and leases, read every limit, " +
    "and (in a cluster) push counters with Peer.Handoff. Give --auth-file (roles for tokens and " +
    "certificates) and --tls-cert/--tls-key (mTLS with --tls-ca), or listen on 127.0.0.1 only (--grpc-host)."
  );
}

/** How long a member waits for the owner's answer to an Inspect it passes on. */
const INSPECT_OWNER_MS = 2000;

/**
 * `/readyz`'s detail with limits from etcd: the version in force, and a pushed version this server
 * refused (it stays ready: it serves the old one). Nothing with files: the body stays `ready`.
 */
function limitsDetail(l: LimitsInForce | undefined): string | undefined {
  if (l === undefined || l.version === 0) return undefined;
  const lines = [`limits version ${l.version} (${l.digest})`];
  if (l.refused) {
    lines.push(
      `limits version ${l.refused.version} refused, still serving version ${l.version}: ${l.refused.error.split("\n").join("; ")}`,
    );
  }
  if (l.staged?.error !== undefined) {
    lines.push(
      `staged limits version ${l.staged.version} cannot be loaded: ${l.staged.error.split("\n").join("; ")}`,
    );
  }
  return lines.join("\n");
}
