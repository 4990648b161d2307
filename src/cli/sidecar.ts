import { hostname } from "node:os";
import { Command, Option } from "commander";
import { pino } from "pino";
import { DEFAULT_CONNECT_TIMEOUT_MS, startSidecar } from "../app/sidecar.js";
import type { HostGuardOptions } from "../client/host-guard.js";
import { DEFAULT_INPUT_LIMITS } from "../protocol/input-limits.js";
import { logLevelFlag } from "./common-options.js";
import { type EnvoyResponseFlagValues, envoyResponseFlags, envoyResponseOptionsOf } from "./envoy-options.js";
import {
  hostPortListOption,
  hostPortOption,
  intOption,
  memberIdOption,
  numberOption,
  portOption,
} from "./options.js";
import {
  dialTlsFlags,
  dialTlsOf,
  listenerTlsFlags,
  listenerTlsNames,
  listenerTlsOf,
  tlsReloadIntervalFlag,
} from "./tls-options.js";

interface SidecarFlags extends EnvoyResponseFlagValues {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  listenTlsCert?: string;
  listenTlsKey?: string;
  listenTlsCa?: string;
  listenTlsClientAuth?: "none" | "request" | "require";
  tlsReloadInterval: number;
  listen: string;
  servers: string[];
  clientId?: string;
  reportInterval: number;
  connectTimeout: number;
  httpPort?: number;
  logLevel: string;
  tokenFile?: string;
  hostGuardCpu?: number;
  hostGuardCpuScope: "process" | "system";
  hostGuardEventLoopDelay?: number;
}

export function sidecarCommand(): Command {
  const dial = dialTlsFlags();
  const listen = listenerTlsFlags("listen-tls", "the Envoy listener's");
  const cmd = new Command("sidecar")
    .description(
      "answer Envoy's ShouldRateLimit next to it from an embedded gateway client: decisions are local, " +
        "counts go to the owners in batches",
    )
    .addOption(
      new Option("--listen <host:port>", "where Envoy calls ShouldRateLimit (keep it on loopback)")
        .env("SHARDLIMIT_LISTEN")
        .argParser(hostPortOption("--listen"))
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--servers <list>", "shardlimit servers (host:port, comma-separated); any one will do")
        .env("SHARDLIMIT_SERVERS")
        .argParser(hostPortListOption("--servers"))
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--client-id <id>", "this gateway's id towards the owners (default: hostname-pid)")
        .env("SHARDLIMIT_CLIENT_ID")
        .argParser(memberIdOption("--client-id")),
    )
    .addOption(
      new Option("--report-interval <ms>", "how often counts are reported to the owners")
        .env("SHARDLIMIT_REPORT_INTERVAL_MS")
        .default(100)
        .argParser(intOption("--report-interval", 10, 60_000)),
    )
    .addOption(
      new Option(
        "--connect-timeout <ms>",
        "how long to wait at start-up for a server to hand out the limits and the assignment (then exit 1)",
      )
        .env("SHARDLIMIT_CONNECT_TIMEOUT_MS")
        .default(DEFAULT_CONNECT_TIMEOUT_MS)
        .argParser(intOption("--connect-timeout", 100, 600_000)),
    )
    .addOption(
      new Option("--http-port <n>", "serve /metrics, /healthz, /readyz on 127.0.0.1 at this port")
        .env("SHARDLIMIT_HTTP_PORT")
        .argParser(portOption("--http-port")),
    )
    .addOption(
      new Option(
        "--host-guard-cpu <n>",
        "shed requests, lowest priority first, while CPU is past this (scope system: the host's busy fraction, 0-1; process: this process's cores)",
      )
        .env("SHARDLIMIT_HOST_GUARD_CPU")
        .argParser(numberOption("--host-guard-cpu", 0, 1024)),
    )
    .addOption(
      new Option("--host-guard-cpu-scope <scope>", "what --host-guard-cpu measures")
        .env("SHARDLIMIT_HOST_GUARD_CPU_SCOPE")
        .choices(["system", "process"])
        .default("system"),
    )
    .addOption(
      new Option(
        "--host-guard-event-loop-delay <ms>",
        "shed requests, lowest priority first, while this process's event loop is this late (p99)",
      )
        .env("SHARDLIMIT_HOST_GUARD_EVENT_LOOP_DELAY_MS")
        .argParser(numberOption("--host-guard-event-loop-delay", 0, 60_000)),
    )
    .addOption(logLevelFlag())
    .addOption(dial.ca)
    .addOption(dial.cert)
    .addOption(dial.key)
    .addOption(dial.serverName)
    .addOption(listen.cert)
    .addOption(listen.key)
    .addOption(listen.ca)
    .addOption(listen.clientAuth)
    .addOption(tlsReloadIntervalFlag())
    .addOption(
      new Option(
        "--token-file <path>",
        "a file holding this sidecar's bearer token for the servers (re-read when it changes)",
      ).env("SHARDLIMIT_TOKEN_FILE"),
    )
    .action(async (flags: SidecarFlags) => {
      const dialTls = dialTlsOf(flags);
      const listenTls = listenerTlsOf(
        {
          cert: flags.listenTlsCert,
          key: flags.listenTlsKey,
          ca: flags.listenTlsCa,
          clientAuth: flags.listenTlsClientAuth,
        },
        listenerTlsNames("listen-tls"),
      );
      const log = pino({ level: flags.logLevel, base: { svc: "shardlimit-sidecar" } });
      try {
        const running = await startSidecar({
          listen: flags.listen,
          servers: flags.servers,
          tokenFile: flags.tokenFile,
          clientId: flags.clientId ?? `${hostname()}-${process.pid}`,
          reportIntervalMs: flags.reportInterval,
          connectTimeoutMs: flags.connectTimeout,
          httpPort: flags.httpPort,
          limits: DEFAULT_INPUT_LIMITS,
          log,
          tls: dialTls && { ...dialTls, pollMs: flags.tlsReloadInterval },
          listenTls: listenTls && { ...listenTls, pollMs: flags.tlsReloadInterval },
          hostGuard: hostGuardOf(flags),
          envoy: envoyResponseOptionsOf(flags),
        });
        const stop = (signal: string) => {
          log.info({ signal }, "stopping");
          running.stop().then(
            () => process.exit(0),
            () => process.exit(1),
          );
        };
        process.once("SIGTERM", () => stop("SIGTERM"));
        process.once("SIGINT", () => stop("SIGINT"));
        // Machine-readable for harnesses that start it on port 0.
        process.stdout.write(
          `${JSON.stringify({ listening: running.grpcPort, http: running.httpPort ?? null })}\n`,
        );
      } catch (err) {
        process.stderr.write(`shardlimit sidecar: ${(err as Error).message}\n`);
        process.exit(1);
      }
    });
  for (const o of envoyResponseFlags()) cmd.addOption(o);
  return cmd;
}

/** The host guard the flags ask for, if any. */
function hostGuardOf(flags: SidecarFlags): HostGuardOptions | undefined {
  const cpu = flags.hostGuardCpu;
  const lag = flags.hostGuardEventLoopDelay;
  if (cpu === undefined && lag === undefined) return undefined;
  return {
    ...(cpu !== undefined ? { cpu: { threshold: cpu, scope: flags.hostGuardCpuScope } } : {}),
    ...(lag !== undefined ? { eventLoopDelay: { thresholdMs: lag } } : {}),
  };
}
