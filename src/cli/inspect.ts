import { Command, Option } from "commander";
import pino from "pino";
import { systemClock } from "../core/clock.js";
import type { InspectResponse } from "../protocol/messages.js";
import { connect } from "../protocol/rpc.js";
import { clientTls, INSECURE_CHANNEL } from "../security/tls.js";
import { bearerMetadata, TokenFile } from "../security/token-file.js";
import { hostPortOption, intOption } from "./options.js";
import { dialTlsFlags, dialTlsOf } from "./tls-options.js";

interface InspectFlags {
  target: string;
  json?: boolean;
  timeout: number;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  tokenFile?: string;
}

/** Owners followed at most: one hop, and one more if the assignment moved meanwhile. */
const MAX_HOPS = 2;

/**
 * `shardlimit inspect DOMAIN/key=value --target HOST:PORT`: asks a server what it knows about one
 * key. A member that does not own it asks the owner itself (Peer.Inspect) and answers with the
 * owner's view, so the owner's address need not be reachable from here. Only when that member
 * could not get the owner's answer (or is of a version without Peer.Inspect) is the owner dialled
 * from here.
 */
export function inspectCommand(): Command {
  const dial = dialTlsFlags();
  return new Command("inspect")
    .description(
      "why a key is rejected: its rule, owner and generation, counter, reporting gateways with their demand and policy, and the last rejections in words (operator-only)",
    )
    .argument("<key>", "the counter key, DOMAIN/key=value[/key=value...]")
    .requiredOption(
      "--target <host:port>",
      "a server's gRPC address (any member: the owner is asked in turn)",
      hostPortOption("--target"),
    )
    .option("--json", "print the inspection as JSON")
    .option("--timeout <ms>", "per call", intOption("--timeout", 1, 60_000), 5000)
    .addOption(dial.ca)
    .addOption(dial.cert)
    .addOption(dial.key)
    .addOption(dial.serverName)
    .addOption(
      new Option(
        "--token-file <path>",
        "a file holding an operator's bearer token (servers with --auth-file allow Inspect to operators only)",
      ).env("SHARDLIMIT_TOKEN_FILE"),
    )
    .action(async (key: string, flags: InspectFlags) => {
      const tlsFiles = dialTlsOf(flags);
      const tls = tlsFiles
        ? clientTls(tlsFiles, { clock: systemClock, log: pino({ level: "warn" }) })
        : undefined;
      const security = tls ?? INSECURE_CHANNEL;
      const metadata =
        flags.tokenFile === undefined
          ? undefined
          : bearerMetadata(new TokenFile(flags.tokenFile, systemClock));
      try {
        let address = flags.target;
        let res: InspectResponse | undefined;
        for (let hop = 0; hop <= MAX_HOPS; hop++) {
          const rpc = connect(address, security.options, systemClock, security.credentials, metadata);
          try {
            res = await rpc.inspect({ key }, { deadlineMs: flags.timeout });
          } finally {
            rpc.close();
          }
          if (res.askedBy) {
            process.stderr.write(
              `${address} (${res.askedBy}) does not own ${key}: it asked its owner ${res.ownerId} at ${res.ownerAddress}\n`,
            );
          }
          if (res.owned || res.ownerAddress === "" || res.ownerAddress === address) break;
          const why = res.ownerError ? ` (it could not: ${res.ownerError})` : "";
          process.stderr.write(
            `${address} does not own ${key}${why}: asking its owner ${res.ownerAddress}\n`,
          );
          address = res.ownerAddress;
        }
        process.stdout.write(flags.json ? `${res!.json}\n` : res!.text);
      } catch (err) {
        process.stderr.write(
          `shardlimit inspect: ${(err as { details?: string }).details || (err as Error).message}\n`,
        );
        process.exitCode = 1;
      } finally {
        tls?.source.close();
      }
    });
}
