import { ShardlimitError } from "../core/errors.js";

/** A configuration file or directory failed validation. `problems` lists every finding. */
export class ConfigError extends ShardlimitError {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: readonly ConfigProblem[]) {
    super("CONFIG_INVALID", problems.map(formatProblem).join("\n"));
    this.problems = problems;
  }
}

export interface ConfigProblem {
  file: string;
  /** Path inside the document, e.g. `descriptors[0].rate_limit.unit`. */
  path: string;
  line?: number;
  message: string;
}

export function formatProblem(p: ConfigProblem): string {
  const where = p.line !== undefined ? `${p.file}:${p.line}` : p.file;
  return p.path ? `${where}: ${p.path}: ${p.message}` : `${where}: ${p.message}`;
}
