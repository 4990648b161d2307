import type { Logger } from "pino";
import { GrpcTransport } from "../client/grpc-transport.js";
import { GLOBAL_TIER_CHANNEL_OPTIONS } from "../cluster/global-tier.js";
import type { Clock } from "../core/clock.js";
import {
  type ClientTls,
  channelSecurity,
  clientTls,
  type ServerTls,
  type ServerTlsOptions,
} from "../security/tls.js";
import { bearerMetadata, type TokenFile } from "../security/token-file.js";
import type { GlobalTierSettings } from "./serve.js";

/**
 * The transport of a region's link to the global tier (issue 14), secured as the server's other
 * links are: its bearer token (`--token-file`) on every call, and TLS when the server has it or
 * the global tier has a CA of its own:
 * - `--global-tier-ca`: the global tier is verified against that CA; this server's certificate
 *   (`--tls-cert`/`--tls-key`), if any, is its client certificate there;
 * - else this server's TLS: verified against `--tls-ca` (the same PKI as the region), with its
 *   certificate presented, as towards its peers;
 * - else plaintext.
 * The name checked is `--global-tier-server-name`, or the host dialled. Files are checked now (an
 * OptionsError naming a bad one) and re-read when they change.
 */
export function globalTierTransport(
  g: GlobalTierSettings,
  tlsOptions: ServerTlsOptions | undefined,
  tls: ServerTls | undefined,
  tokenFile: TokenFile | undefined,
  deps: { clock: Clock; log: Logger },
): GrpcTransport {
  const metadata = tokenFile && bearerMetadata(tokenFile);
  return new GrpcTransport({ ...GLOBAL_TIER_CHANNEL_OPTIONS }, linkTls(g, tlsOptions, tls, deps), metadata);
}

/** The link's TLS, per the order above; undefined for plaintext. */
function linkTls(
  g: GlobalTierSettings,
  tlsOptions: ServerTlsOptions | undefined,
  tls: ServerTls | undefined,
  deps: { clock: Clock; log: Logger },
): ClientTls | undefined {
  if (g.ca !== undefined) {
    const { cert, key, pollMs } = tlsOptions ?? {};
    return clientTls({ ca: g.ca, cert, key, serverName: g.serverName, pollMs }, deps);
  }
  // The server's files, watched by the server's source (closed with the server).
  if (tls !== undefined) return { ...channelSecurity(tls.source, g.serverName), source: tls.source };
  return undefined;
}
