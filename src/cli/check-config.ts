import { Command, Option } from "commander";
import { checkConfig } from "../config/check.js";
import { type ConfigProblem, formatProblem } from "../config/errors.js";

export function checkConfigCommand(): Command {
  return new Command("check-config")
    .description("validate a limit config (file or directory); exit 0 if valid, 1 with every problem if not")
    .argument("<path>", "a YAML file or a directory of them")
    .addOption(
      new Option(
        "--merge-domains",
        "merge a domain defined in several files, as serve --merge-domains does",
      ).env("SHARDLIMIT_MERGE_DOMAINS"),
    )
    .action((path: string, flags: { mergeDomains?: boolean }) => {
      const result = checkConfig(path, { mergeDomains: flags.mergeDomains ?? false });
      if (result.ok) {
        process.stdout.write(`${result.summary}\n`);
        return;
      }
      reportProblems(path, result.problems);
    });
}

/** What check-config prints for an invalid config (stderr, exit code 1); `limits push` says the same. */
export function reportProblems(path: string, problems: readonly ConfigProblem[]): void {
  process.stderr.write(`${problems.length} problem(s) in ${path}:\n`);
  for (const p of problems) process.stderr.write(`  ${formatProblem(p)}\n`);
  process.exitCode = 1;
}
