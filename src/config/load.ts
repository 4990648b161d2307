import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type CompileOptions, compile } from "./compile.js";
import { ConfigError, type ConfigProblem } from "./errors.js";
import { OVERRIDES_SOURCE, withOverrides } from "./overrides.js";
import { type DomainSpec, parseDomainFile } from "./parse-file.js";
import type { ConfigSource, LimitConfig } from "./types.js";

export type { CompileOptions, ConfigSource };

/**
 * Loads limits from one YAML file or a directory of them, in envoyproxy/ratelimit's format.
 * A directory is read non-recursively: `*.yaml` and `*.yml`, sorted by name, skipping dotfiles
 * (editor lock files, Kubernetes' `..data`). Each file holds one domain, or several as `---`
 * separated documents. Every problem in every file is collected and thrown as one ConfigError,
 * so nothing is half-applied and one run shows everything there is to fix.
 */

export function loadConfig(path: string, options: CompileOptions = {}): LimitConfig {
  return compileSources(readSources(path), options);
}

/** Reads the files a path names. Separate from compiling so a watcher can skip unchanged content. */
export function readSources(path: string): ConfigSource[] {
  const isDir = stat(path).isDirectory();
  const files = isDir ? listYaml(path) : [path];
  return files.map((file) => ({ file, text: read(file) }));
}

export function compileSources(all: readonly ConfigSource[], options: CompileOptions = {}): LimitConfig {
  const problems: ConfigProblem[] = [];
  const specs: DomainSpec[] = [];
  // Runtime overrides (limits in etcd) travel as one more source, applied on top (overrides.ts).
  const sources = all.filter((s) => s.file !== OVERRIDES_SOURCE);
  const overrides = all.find((s) => s.file === OVERRIDES_SOURCE);
  for (const { file, text } of sources) {
    const parsed = parseDomainFile(file, text);
    problems.push(...parsed.problems);
    specs.push(...parsed.specs);
  }
  const compiled = compile(specs, sources, options);
  problems.push(...compiled.problems);
  if (problems.length > 0) throw new ConfigError(problems);
  if (overrides === undefined) return compiled.config;
  try {
    return withOverrides(compiled.config, overrides);
  } catch (err) {
    throw new ConfigError([{ file: OVERRIDES_SOURCE, path: "", message: (err as Error).message }]);
  }
}

function listYaml(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw unreadable(dir, err);
  }
  const files = names
    .filter((n) => !n.startsWith(".") && (n.endsWith(".yaml") || n.endsWith(".yml")))
    .sort()
    .map((n) => join(dir, n))
    .filter((f) => isFile(f));
  if (files.length === 0) {
    throw new ConfigError([{ file: dir, path: "", message: "the directory has no *.yaml or *.yml files" }]);
  }
  return files;
}

function stat(path: string) {
  try {
    return statSync(path);
  } catch (err) {
    throw unreadable(path, err);
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    // A dangling symlink mid-swap is not a config file; the next reload sees the new one.
    return false;
  }
}

function read(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw unreadable(file, err);
  }
}

function unreadable(file: string, err: unknown): ConfigError {
  const code = (err as NodeJS.ErrnoException).code;
  const message =
    code === "ENOENT"
      ? "does not exist"
      : code === "EACCES"
        ? "permission denied"
        : code === "EISDIR"
          ? "is a directory"
          : `cannot be read: ${(err as Error).message}`;
  return new ConfigError([{ file, path: "", message }]);
}
