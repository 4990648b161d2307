import { Command, Option } from "commander";
import { connectEtcd } from "../cluster/etcd-client.js";
import { formatStatus, readStatus } from "../cluster/status.js";
import { systemClock } from "../core/clock.js";
import { connect } from "../protocol/rpc.js";
import { bearerMetadata, TokenFile } from "../security/token-file.js";
import {
  type EtcdAccessFlagValues,
  etcdAccessFlags,
  etcdAccessOf,
  etcdFlag,
  prefixFlag,
} from "./common-options.js";

export function statusCommand(): Command {
  const etcdAccess = etcdAccessFlags();
  return new Command("status")
    .description("print a cluster's members, assignment generation, slices and load per member")
    .addOption(etcdFlag("etcd client URLs (comma-separated)", true))
    .addOption(prefixFlag())
    .addOption(etcdAccess.ca)
    .addOption(etcdAccess.cert)
    .addOption(etcdAccess.key)
    .addOption(etcdAccess.authFile)
    .option("--json", "print JSON instead of a table")
    .addOption(
      new Option(
        "--token-file <path>",
        "also ask each member over gRPC which generation it serves, with the bearer token in this file (servers with --auth-file)",
      ).env("SHARDLIMIT_TOKEN_FILE"),
    )
    .action(
      async (
        flags: { etcd: string[]; prefix: string; json?: boolean; tokenFile?: string } & EtcdAccessFlagValues,
      ) => {
        const client = connectEtcd(flags.etcd, etcdAccessOf(flags, flags.etcd));
        try {
          const s = await Promise.race([
            readStatus(client, flags.prefix),
            // Ref'd, as before: the CLI waits for etcd's answer or this timeout, nothing else.
            new Promise<never>((_, reject) =>
              systemClock.after(
                3000,
                () => reject(new Error(`etcd at ${flags.etcd.join(",")} did not answer within 3 s`)),
                { ref: true },
              ),
            ),
          ]);
          const served =
            flags.tokenFile === undefined ? undefined : await askMembers(s.members, flags.tokenFile);
          if (flags.json) process.stdout.write(`${JSON.stringify(served ? { ...s, served } : s, null, 2)}\n`);
          else {
            process.stdout.write(`${formatStatus(s)}\n`);
            for (const [id, v] of Object.entries(served ?? {}))
              process.stdout.write(
                `member ${id} ${typeof v === "number" ? `serves generation ${v}` : `did not answer: ${v}`}\n`,
              );
          }
        } catch (err) {
          process.stderr.write(`shardlimit status: ${(err as Error).message}\n`);
          process.exitCode = 1;
        } finally {
          client.close();
        }
      },
    );
}

/** Each member's generation as it answers GetClusterView (with the token), or why it did not. */
async function askMembers(
  members: readonly { id: string; address: string }[],
  tokenFile: string,
): Promise<Record<string, number | string>> {
  const metadata = bearerMetadata(new TokenFile(tokenFile));
  const out: Record<string, number | string> = {};
  await Promise.all(
    members.map(async (m) => {
      const rpc = connect(m.address, {}, systemClock, undefined, metadata);
      try {
        out[m.id] = (await rpc.getClusterView({}, { deadlineMs: 2000 })).generation;
      } catch (err) {
        out[m.id] = (err as Error).message;
      } finally {
        rpc.close();
      }
    }),
  );
  return out;
}
