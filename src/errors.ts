/**
 * One error class per failure, each with a stable `code` that callers and tests match on.
 * Messages name what was wrong; codes never change once published.
 */
export class ShardlimitError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A request or an item in a batch is malformed or out of bounds. Nothing was changed. */
export class InvalidArgumentError extends ShardlimitError {
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
  }
}

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

/** Command-line or server options are invalid. */
export class OptionsError extends ShardlimitError {
  constructor(message: string) {
    super("OPTIONS_INVALID", message);
  }
}

/** The key's slice is owned by another server (cluster mode). */
export class NotOwnerError extends ShardlimitError {
  readonly generation: number;
  constructor(message: string, generation: number) {
    super("NOT_OWNER", message);
    this.generation = generation;
  }
}

/** A concurrency lease that is unknown or already expired was released or renewed. */
export class UnknownLeaseError extends ShardlimitError {
  constructor(message: string) {
    super("UNKNOWN_LEASE", message);
  }
}

/** A server this call depends on (the key's owner) cannot be reached now; retry shortly. */
export class UnavailableError extends ShardlimitError {
  constructor(message: string) {
    super("UNAVAILABLE", message);
  }
}

/** The gateway client has not yet learned the limits and the assignment from any server. */
export class NotReadyError extends ShardlimitError {
  constructor(message: string) {
    super("NOT_READY", message);
  }
}
