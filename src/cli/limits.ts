import { statSync } from "node:fs";
import { dirname, relative } from "node:path";
import { Command, Option } from "commander";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../cluster/etcd-client.js";
import {
  deleteOverride,
  etcdLimitsMembers,
  type LimitsState,
  pushLimits,
  putOverride,
  readLimits,
} from "../cluster/limits-store.js";
import type { MemberRecord } from "../cluster/membership.js";
import { checkConfig, describeRule } from "../config/check.js";
import { type ConfigDiff, diffConfigs, removalProblems } from "../config/diff.js";
import { formatDuration, parseDuration } from "../config/duration.js";
import { ConfigError, type ConfigProblem } from "../config/errors.js";
import { decodeKey, encodeKey } from "../config/key.js";
import { compileSources } from "../config/load.js";
import type { LimitOverride } from "../config/overrides.js";
import { PRIORITY_KEY } from "../config/priority.js";
import { type ConfigSource, type LimitConfig, UNIT_SECONDS, type Unit } from "../config/types.js";
import { sleep, systemClock, type Timer } from "../core/clock.js";
import { OptionsError } from "../core/errors.js";
import { reportProblems } from "./check-config.js";
import {
  type EtcdAccessFlagValues,
  etcdAccessFlags,
  etcdAccessOf,
  etcdFlag,
  prefixFlag,
} from "./common-options.js";
import { intOption } from "./options.js";

/**
 * `shardlimit limits ...`: limits in etcd, for servers run with `--limits-from etcd`
 * (cluster/limits-store.ts has the layout, cluster/limits-source.ts what servers do with it).
 */

interface EtcdFlags extends EtcdAccessFlagValues {
  etcd: string[];
  prefix: string;
}

/** A failure that is the operator's to fix: printed as is, exit 1. */
class LimitsCommandError extends Error {}

/** Longest an override may last: a year (a forever override has no --ttl). */
const MAX_TTL_MS = 365 * 86_400_000;
const ETCD_TIMEOUT_MS = 5000;
/** How long `push` waits for the servers to switch to a staged version (they wait 2 s at most). */
const SWITCH_WAIT_MS = 4000;

export function limitsCommand(): Command {
  const limits = new Command("limits").description(
    "limits in etcd for servers run with --limits-from etcd: push, get, diff, history, rollback, and runtime overrides (set, unset)",
  );
  limits.addCommand(
    withEtcd(
      new Command("push")
        .description("validate a config as check-config does and make it the cluster's next version")
        .argument("<path>", "a YAML file or a directory of them")
        .option("--comment <text>", "a note kept with the version (history)", "")
        .option(
          "--allow-limit-removal",
          "push a version that removes a domain or a rule (refused by default: what it removes becomes unlimited)",
        ),
      async (client, flags: EtcdFlags & { comment: string; allowLimitRemoval?: boolean }, path: string) => {
        const checked = checkConfig(path);
        if (!checked.ok) return reportProblems(path, checked.problems);
        const sources = storedSources(path, checked.config);
        await push(client, flags, sources, flags.comment, flags.allowLimitRemoval ?? false);
      },
      SWITCH_WAIT_MS,
    ),
  );
  limits.addCommand(
    withEtcd(
      new Command("get")
        .description("print the version in force, its files and the overrides in force")
        .option("--json", "print JSON"),
      async (client, flags: EtcdFlags & { json?: boolean }) => {
        const s = await readLimits(client, flags.prefix);
        const now = systemClock.now();
        const overrides = s.overrides.filter((o) => o.expiresAt === undefined || o.expiresAt > now);
        if (flags.json) {
          const current = s.current && { ...s.current };
          const staged = s.staged?.record;
          process.stdout.write(`${JSON.stringify({ current, staged, overrides }, null, 2)}\n`);
          return;
        }
        if (!s.current) throw new LimitsCommandError(noVersion(flags.prefix, s));
        const c = s.current;
        const lines = [
          `version ${c.version} (${c.digest}) pushed ${iso(c.at)}${c.comment ? `: ${c.comment}` : ""}`,
        ];
        if (s.staged) {
          lines.push(`staged: version ${s.staged.record.version}, waiting for the servers' answers`);
        }
        for (const f of c.sources) lines.push(`--- ${f.file}`, f.text.trimEnd());
        lines.push(overrides.length === 0 ? "overrides: none" : "overrides:");
        for (const o of overrides) lines.push(`  ${describeOverride(o, now)}`);
        process.stdout.write(`${lines.join("\n")}\n`);
      },
    ),
  );
  limits.addCommand(
    withEtcd(
      new Command("diff")
        .description("what pushing a config would change in the version in force")
        .argument("<path>", "a YAML file or a directory of them"),
      async (client, flags: EtcdFlags, path: string) => {
        const checked = checkConfig(path);
        if (!checked.ok) return reportProblems(path, checked.problems);
        const s = await readLimits(client, flags.prefix);
        const next = compileSources(storedSources(path, checked.config));
        if (!s.current) {
          process.stdout.write(`no version pushed yet: all of it is new\n${describeAll(next)}\n`);
          return;
        }
        const prev = compileSources(s.current.sources);
        process.stdout.write(`${formatDiff(diffConfigs(prev, next), prev, next, s.current.version)}\n`);
      },
    ),
  );
  limits.addCommand(
    withEtcd(
      new Command("history").description("list the versions kept (the last 50)"),
      async (client, flags) => {
        const s = await readLimits(client, flags.prefix);
        if (s.versions.length === 0) throw new LimitsCommandError(noVersion(flags.prefix, s));
        const lines = s.versions.map(
          (v) =>
            `${v.version === s.head?.version ? "*" : v.version === s.staged?.record.version ? "+" : " "} v${v.version}  ${iso(v.at)}  ${v.digest}  ${v.sources.map((f) => f.file).join(",")}${v.comment ? `  ${v.comment}` : ""}`,
        );
        process.stdout.write(`${lines.join("\n")}\n`);
      },
    ),
  );
  limits.addCommand(
    withEtcd(
      new Command("rollback")
        .description("push a new version whose files are those of version N")
        .argument("<n>", "a version kept in history", intOption("<n>", 1, Number.MAX_SAFE_INTEGER))
        .option("--allow-limit-removal", "allow it to remove a domain or a rule"),
      async (client, flags: EtcdFlags & { allowLimitRemoval?: boolean }, n: number) => {
        const s = await readLimits(client, flags.prefix);
        const v = s.versions.find((x) => x.version === n);
        if (!v) {
          const kept = s.versions.map((x) => x.version);
          throw new LimitsCommandError(
            `version ${n} is not kept${kept.length > 0 ? ` (kept: ${kept[0]} to ${kept[kept.length - 1]})` : ""}`,
          );
        }
        await push(client, flags, v.sources, `rollback to version ${n}`, flags.allowLimitRemoval ?? false, s);
      },
      SWITCH_WAIT_MS,
    ),
  );
  limits.addCommand(
    withEtcd(
      new Command("set")
        .description(
          "override one descriptor's limit on every server and gateway (within a second), until unset or --ttl passes",
        )
        .argument("<descriptor>", "DOMAIN/key=value[/key2=value2...]")
        .addOption(
          new Option("--requests-per-unit <n>", "the limit: units admitted per --unit")
            .argParser(intOption("--requests-per-unit", 0, 0xffff_ffff))
            .makeOptionMandatory(),
        )
        .addOption(
          new Option("--unit <unit>", "the window").choices(Object.keys(UNIT_SECONDS)).makeOptionMandatory(),
        )
        .addOption(
          new Option("--ttl <duration>", "expire after this long, e.g. 30s, 10m, 2h").argParser(ttlOption),
        ),
      async (
        client,
        flags: EtcdFlags & { requestsPerUnit: number; unit: Unit; ttl?: number },
        descriptor: string,
      ) => {
        const key = overrideKey(descriptor);
        const s = await readLimits(client, flags.prefix);
        if (!s.current) throw new LimitsCommandError(noVersion(flags.prefix, s));
        const config = compileSources(s.current.sources);
        const { domain, entries } = decodeKey(key) as Exclude<ReturnType<typeof decodeKey>, string>;
        if (!config.domains.includes(domain)) {
          throw new LimitsCommandError(
            `${descriptor}: domain "${domain}" is not in version ${s.current.version} (domains: ${config.domains.join(", ")})`,
          );
        }
        const now = systemClock.now();
        const o: LimitOverride = {
          key,
          requestsPerUnit: flags.requestsPerUnit,
          unit: flags.unit,
          ...(flags.ttl !== undefined ? { expiresAt: now + flags.ttl } : {}),
        };
        await putOverride(client, flags.prefix, o, flags.ttl);
        const base = config.resolve(domain, entries);
        process.stdout.write(
          `set ${describeOverride(o, now)}\n  ${
            base
              ? `replaces rule ${base.rule.id} (${describeRule(base.rule)}) for this descriptor`
              : `no rule of version ${s.current.version} matches it: the override is a limit of its own`
          }\n`,
        );
      },
    ),
  );
  limits.addCommand(
    withEtcd(
      new Command("unset")
        .description("remove an override")
        .argument("<descriptor>", "DOMAIN/key=value[/key2=value2...], as given to set"),
      async (client, flags, descriptor: string) => {
        const key = overrideKey(descriptor);
        if (!(await deleteOverride(client, flags.prefix, key))) {
          throw new LimitsCommandError(`no override for ${key}`);
        }
        process.stdout.write(`unset ${key}\n`);
      },
    ),
  );
  return limits;
}

/** Adds the etcd flags and runs `run` with a client, bounded in time; errors go to stderr, exit 1. */
function withEtcd<F extends EtcdFlags, A extends unknown[]>(
  cmd: Command,
  run: (client: Etcd3, flags: F, ...args: A) => Promise<void>,
  /** Time the command spends waiting on purpose (push: the servers' switch), beyond etcd's answers. */
  waitsMs = 0,
): Command {
  const access = etcdAccessFlags();
  return cmd
    .addOption(etcdFlag("etcd client URLs (comma-separated)", true))
    .addOption(prefixFlag())
    .addOption(access.ca)
    .addOption(access.cert)
    .addOption(access.key)
    .addOption(access.authFile)
    .action(async (...all: unknown[]) => {
      // commander passes the arguments, then the options, then the command.
      const args = all.slice(0, -2) as A;
      const flags = all[all.length - 2] as F;
      const client = connectEtcd(flags.etcd, etcdAccessOf(flags, flags.etcd));
      let timer: Timer | undefined;
      try {
        await Promise.race([
          run(client, flags, ...args),
          new Promise<never>((_, reject) => {
            // Ref'd: the command waits for etcd's answer or this, nothing else.
            const ms = ETCD_TIMEOUT_MS + waitsMs;
            timer = systemClock.after(
              ms,
              () => reject(new Error(`etcd at ${flags.etcd.join(",")} did not answer within ${ms / 1000} s`)),
              { ref: true },
            );
          }),
        ]);
      } catch (err) {
        if (err instanceof OptionsError) throw err;
        if (err instanceof ConfigError) {
          process.stderr.write(
            `shardlimit limits ${cmd.name()}: the stored version is invalid:\n${err.message}\n`,
          );
        } else {
          process.stderr.write(`shardlimit limits ${cmd.name()}: ${(err as Error).message}\n`);
        }
        process.exitCode = 1;
      } finally {
        timer?.cancel();
        client.close();
      }
    });
}

/** Validated config -> what is stored: file names relative to the pushed path, not this machine's. */
function storedSources(path: string, config: LimitConfig): ConfigSource[] {
  const base = statSync(path).isDirectory() ? path : dirname(path);
  return config.sources.map((s) => ({ file: relative(base, s.file), text: s.text }));
}

async function push(
  client: Etcd3,
  flags: EtcdFlags,
  sources: readonly ConfigSource[],
  comment: string,
  allowRemoval: boolean,
  known?: LimitsState,
): Promise<void> {
  const next = compileSources(sources);
  const s = known ?? (await readLimits(client, flags.prefix));
  let prev: LimitConfig | undefined;
  if (s.current) {
    prev = compileSources(s.current.sources);
    if (prev.version === next.version) {
      process.stdout.write(`no change: version ${s.current.version} has this content; nothing pushed\n`);
      return;
    }
    const diff = diffConfigs(prev, next);
    const problems: ConfigProblem[] = removalProblems(prev, diff);
    if (problems.length > 0 && !allowRemoval) {
      process.stderr.write(
        `refused: this version removes limits (push it with --allow-limit-removal, and run servers with --allow-limit-removal to apply it):\n`,
      );
      for (const p of problems) process.stderr.write(`  ${p.file}: ${p.message}\n`);
      process.exitCode = 1;
      return;
    }
  }
  const head = await pushLimits(client, flags.prefix, {
    digest: next.version,
    sources,
    comment,
    at: systemClock.now(),
  });
  const what =
    prev && s.current
      ? formatDiff(diffConfigs(prev, next), prev, next, s.current.version)
      : `first version\n${describeAll(next)}`;
  process.stdout.write(`pushed version ${head.version} (${head.digest})\n${what}\n`);
  if (head.staged) process.stdout.write(`${await switchOutcome(client, flags.prefix, head.version)}\n`);
}

/**
 * Waits (bounded) for the servers to switch to a staged version together, and says how it went:
 * the servers that switched, those that refused it (keeping the old one) and why.
 */
async function switchOutcome(client: Etcd3, prefix: string, version: number): Promise<string> {
  const until = systemClock.now() + SWITCH_WAIT_MS;
  // Settled: the head moved, and every server serves the version or refused it.
  const settled = (m: MemberRecord) => m.limits!.version >= version || m.limits!.refused?.version === version;
  let [s, members] = await Promise.all([readLimits(client, prefix), etcdLimitsMembers(client, prefix)]);
  while (
    ((s.head?.version ?? 0) < version ? s.staged?.record.version === version : !members.every(settled)) &&
    systemClock.now() < until
  ) {
    await sleep(systemClock, 50, { ref: true });
    [s, members] = await Promise.all([readLimits(client, prefix), etcdLimitsMembers(client, prefix)]);
  }
  const head = s.head?.version ?? 0;
  if (head < version) {
    if (s.staged && s.staged.record.version > version) {
      return `superseded by version ${s.staged.record.version} before it was switched on`;
    }
    return `staged, not in force yet after ${SWITCH_WAIT_MS / 1000} s (waiting for the servers' answers: see \`shardlimit status\`)`;
  }
  if (head > version) return `in force, then superseded by version ${head}`;
  const serving = members.filter((m) => m.limits!.version >= version).map((m) => m.id);
  const lines = [
    `in force on ${serving.length} of ${members.length} servers${serving.length > 0 ? ` (${serving.join(", ")})` : ""}`,
  ];
  for (const m of members) {
    const l = m.limits!;
    const why = l.refused?.version === version ? l.refused.error : l.staged?.error;
    if (l.version < version) {
      lines.push(
        `  ${m.id} keeps version ${l.version}: ${why === undefined ? "not switched yet" : `refused it: ${why.split("\n").join("; ")}`}`,
      );
    }
  }
  return lines.join("\n");
}

function formatDiff(d: ConfigDiff, prev: LimitConfig, next: LimitConfig, from: number): string {
  const lines: string[] = [];
  for (const x of d.domainsAdded) lines.push(`+ domain ${x}`);
  for (const x of d.domainsRemoved) lines.push(`- domain ${x}`);
  for (const id of d.rulesAdded) lines.push(`+ ${id}  ${describeRule(next.ruleById(id)!)}`);
  for (const id of d.rulesRemoved) lines.push(`- ${id}  ${describeRule(prev.ruleById(id)!)}`);
  for (const id of d.rulesChanged) {
    lines.push(`~ ${id}  ${describeRule(prev.ruleById(id)!)}  ->  ${describeRule(next.ruleById(id)!)}`);
  }
  return lines.length === 0 ? `no change from version ${from}` : `from version ${from}:\n${lines.join("\n")}`;
}

function describeAll(c: LimitConfig): string {
  return c.rules.map((r) => `+ ${r.id}  ${describeRule(r)}`).join("\n");
}

function describeOverride(o: LimitOverride, now: number): string {
  const left =
    o.expiresAt === undefined
      ? "no expiry"
      : `expires in ${formatDuration(Math.max(0, Math.ceil((o.expiresAt - now) / 1000)) * 1000)}`;
  return `${o.key}  ${o.requestsPerUnit} per ${o.unit}  (${left})`;
}

/** The canonical key of a descriptor argument, or an OptionsError naming what is wrong. */
function overrideKey(descriptor: string): string {
  const d = decodeKey(descriptor);
  if (typeof d === "string") {
    throw new OptionsError(
      `<descriptor> ${JSON.stringify(descriptor)}: ${d} (expected DOMAIN/key=value[/key2=value2...])`,
    );
  }
  if (d.entries.some((e) => e.key === PRIORITY_KEY)) {
    throw new OptionsError(
      `<descriptor> ${JSON.stringify(descriptor)}: an override applies to every class; leave out the "${PRIORITY_KEY}" entry`,
    );
  }
  return encodeKey(d.domain, d.entries);
}

function ttlOption(v: string): number {
  const ms = parseDuration(v.trim());
  if (ms === undefined || ms < 1000 || ms > MAX_TTL_MS) {
    throw new OptionsError(
      `--ttl must be a duration from 1s to 365d (e.g. 30s, 10m, 2h), got ${JSON.stringify(v)}`,
    );
  }
  return ms;
}

function noVersion(prefix: string, s: LimitsState): string {
  const extra = s.problems.length > 0 ? ` (${s.problems.join("; ")})` : "";
  return `no limits pushed under ${prefix}limits/${extra}: push a config with \`shardlimit limits push\``;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
