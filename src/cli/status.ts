import { Command } from "commander";
import { connectEtcd } from "../cluster/etcd-client.js";
import { formatStatus, readStatus } from "../cluster/status.js";
import { systemClock } from "../core/clock.js";
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
    .action(async (flags: { etcd: string[]; prefix: string; json?: boolean } & EtcdAccessFlagValues) => {
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
        process.stdout.write(`${flags.json ? JSON.stringify(s, null, 2) : formatStatus(s)}\n`);
      } catch (err) {
        process.stderr.write(`shardlimit status: ${(err as Error).message}\n`);
        process.exitCode = 1;
      } finally {
        client.close();
      }
    });
}
