import { Option } from "commander";
import { OptionsError } from "../core/errors.js";
import {
  CLIENT_AUTH_MODES,
  type ClientAuth,
  DEFAULT_TLS_POLL_MS,
  type ServerTlsOptions,
  type TlsFiles,
} from "../security/tls.js";
import { intOption, refuseWithout } from "./options.js";

/**
 * TLS flags, each with its SHARDLIMIT_* variable: a listener's (`serve`'s gRPC port, the
 * sidecar's Envoy port) and a dialler's (the sidecar towards the servers). Combinations that
 * cannot work are refused at start, naming the flags.
 */

/** Flag names of a listener's TLS: `--tls-*` for serve, `--listen-tls-*` for the sidecar. */
export interface ListenerTlsNames {
  cert: string;
  key: string;
  ca: string;
  clientAuth: string;
}

/** The listener flags under `prefix` ("tls" or "listen-tls"), env SHARDLIMIT_<PREFIX>_*. */
export function listenerTlsFlags(
  prefix: "tls" | "listen-tls",
  whose: string,
): { cert: Option; key: Option; ca: Option; clientAuth: Option } {
  const env = `SHARDLIMIT_${prefix.toUpperCase().replace("-", "_")}`;
  return {
    cert: new Option(
      `--${prefix}-cert <path>`,
      `${whose} TLS certificate (PEM; re-read when it changes)`,
    ).env(`${env}_CERT`),
    key: new Option(
      `--${prefix}-key <path>`,
      `the key of --${prefix}-cert (PEM; re-read when it changes)`,
    ).env(`${env}_KEY`),
    ca: new Option(
      `--${prefix}-ca <path>`,
      "CA bundle (PEM) client certificates are verified against (and, for serve, peers' certificates)",
    ).env(`${env}_CA`),
    clientAuth: new Option(
      `--${prefix}-client-auth <mode>`,
      "client certificates: none, request (asked for, not required; only one that verifies gives the caller an identity), require (mutual TLS)",
    )
      .env(`${env}_CLIENT_AUTH`)
      .choices(CLIENT_AUTH_MODES),
  };
}

export function listenerTlsNames(prefix: "tls" | "listen-tls"): ListenerTlsNames {
  return {
    cert: `--${prefix}-cert`,
    key: `--${prefix}-key`,
    ca: `--${prefix}-ca`,
    clientAuth: `--${prefix}-client-auth`,
  };
}

/** How often TLS files are looked at for a rotation. */
export function tlsReloadIntervalFlag(): Option {
  return new Option("--tls-reload-interval <ms>", "how often TLS files are checked for changes")
    .env("SHARDLIMIT_TLS_RELOAD_INTERVAL_MS")
    .default(DEFAULT_TLS_POLL_MS)
    .argParser(intOption("--tls-reload-interval", 100, 3_600_000));
}

/** `--peer-server-name` (serve). */
export function peerServerNameFlag(): Option {
  return new Option(
    "--peer-server-name <name>",
    "the name peers' certificates must carry (default: the host of each peer's advertised address)",
  ).env("SHARDLIMIT_PEER_SERVER_NAME");
}

interface ListenerValues {
  cert?: string;
  key?: string;
  ca?: string;
  clientAuth?: ClientAuth;
}

/**
 * A listener's TLS from its flag values (undefined: plaintext). `dialsPeers`: the server dials
 * its peers with these files, so it needs the CA to verify them.
 */
export function listenerTlsOf(
  v: ListenerValues,
  names: ListenerTlsNames,
  extra: { dialsPeers?: string; peerServerName?: string } = {},
): ServerTlsOptions | undefined {
  const clientAuth = v.clientAuth ?? "none";
  if (v.cert === undefined && v.key === undefined) {
    refuseWithout(
      { [names.ca]: v.ca, [names.clientAuth]: v.clientAuth, "--peer-server-name": extra.peerServerName },
      `${names.cert} and ${names.key} (TLS is off without them)`,
    );
    return undefined;
  }
  if (v.cert === undefined) throw new OptionsError(`${names.key} needs ${names.cert}`);
  if (v.key === undefined) throw new OptionsError(`${names.cert} needs ${names.key}`);
  if (clientAuth !== "none" && v.ca === undefined) {
    throw new OptionsError(
      `${names.clientAuth} ${clientAuth} needs ${names.ca} (the CA client certificates are verified against)`,
    );
  }
  if (extra.dialsPeers !== undefined && v.ca === undefined) {
    throw new OptionsError(
      `${names.cert} with ${extra.dialsPeers} needs ${names.ca}: peers' certificates are verified against it`,
    );
  }
  return { cert: v.cert, key: v.key, ca: v.ca, clientAuth, peerServerName: extra.peerServerName };
}

/** The sidecar's TLS towards the servers it dials. */
export function dialTlsFlags(): { ca: Option; cert: Option; key: Option; serverName: Option } {
  return {
    ca: new Option("--tls-ca <path>", "CA bundle (PEM) the servers' certificates are verified against").env(
      "SHARDLIMIT_TLS_CA",
    ),
    cert: new Option(
      "--tls-cert <path>",
      "client certificate (PEM) presented to the servers (mutual TLS)",
    ).env("SHARDLIMIT_TLS_CERT"),
    key: new Option("--tls-key <path>", "the key of --tls-cert (PEM)").env("SHARDLIMIT_TLS_KEY"),
    serverName: new Option(
      "--tls-server-name <name>",
      "the name the servers' certificates must carry (default: the host dialled)",
    ).env("SHARDLIMIT_TLS_SERVER_NAME"),
  };
}

/** The dialling side's TLS from its flag values (undefined: plaintext). */
export function dialTlsOf(v: {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}): (TlsFiles & { ca: string; serverName?: string }) | undefined {
  if (v.tlsCa === undefined) {
    refuseWithout(
      { "--tls-cert": v.tlsCert, "--tls-key": v.tlsKey, "--tls-server-name": v.tlsServerName },
      "--tls-ca (TLS is off without it)",
    );
    return undefined;
  }
  if ((v.tlsCert === undefined) !== (v.tlsKey === undefined)) {
    throw new OptionsError(
      v.tlsCert === undefined ? "--tls-key needs --tls-cert" : "--tls-cert needs --tls-key",
    );
  }
  return { ca: v.tlsCa, cert: v.tlsCert, key: v.tlsKey, serverName: v.tlsServerName };
}
