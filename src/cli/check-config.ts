import { Command } from "commander";
import { checkConfig } from "../config/check.js";
import { type ConfigProblem, formatProblem } from "../config/errors.js";

export function checkConfigCommand(): Command {
  return new Command("check-config")
    .description("validate a limit config (file or directory); exit 0 if valid, 1 with every problem if not")
    .argument("<path>", "a YAML file or a directory of them")
    .action((path: string) => {
      const result = checkConfig(path);
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
