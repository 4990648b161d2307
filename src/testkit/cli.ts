import { type ChildProcess, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Child, spawnChild } from "./child.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository (or installed package) root: src/testkit/../.. or dist/testkit/../.. */
export const REPO_ROOT = path.resolve(HERE, "../..");
/** The built command line, as installed: `shardlimit` is `node dist/cli/main.js`. */
export const BUILT_CLI = path.join(REPO_ROOT, "dist/cli/main.js");
/** The CLI next to this module: dist/cli/main.js when built, src/cli/main.ts under tsx. */
const SIBLING_CLI = path.join(HERE, "..", "cli", `main.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`);

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Builds dist/ unless it is newer than every file in src/. */
export function ensureBuilt(): void {
  const built = existsSync(BUILT_CLI) ? statSync(BUILT_CLI).mtimeMs : 0;
  if (built > newestMtime(path.join(REPO_ROOT, "src"))) return;
  const r = spawnSync("npm", ["run", "build"], { cwd: REPO_ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`npm run build failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
}

/** This process's environment without SHARDLIMIT_* (a developer's own settings), plus `env`. */
function cliEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SHARDLIMIT_")));
  return { ...base, ...env };
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /**
   * `built` (tests): node dist/cli/main.js from the repository root, as installed, keeping every
   * stdout line. `sibling` (the default: `shardlimit bench`, bench/): the CLI next to this module
   * with this process's node flags (e.g. tsx's loader), keeping the newest lines.
   */
  cli?: "built" | "sibling";
  onLine?: (line: string) => void;
}

const clis = new Set<ChildProcess>();

/** Runs this package's CLI with `args` in a child process; `killAllCli()` ends what is left. */
export function spawnCli(args: string[], opts: CliOptions = {}): Child {
  const built = opts.cli === "built";
  const c = built
    ? spawnChild(process.execPath, [BUILT_CLI, ...args], {
        env: cliEnv(opts.env ?? {}),
        cwd: REPO_ROOT,
        maxLines: Number.POSITIVE_INFINITY,
        onLine: opts.onLine,
      })
    : spawnChild(process.execPath, [...process.execArgv, SIBLING_CLI, ...args], {
        env: cliEnv(opts.env ?? {}),
        onLine: opts.onLine,
      });
  clis.add(c.child);
  c.exited.then(() => clis.delete(c.child));
  return c;
}

/** Kills every CLI process still running (SIGKILL) and waits for them to go. */
export async function killAllCli(): Promise<void> {
  await Promise.all(
    [...clis].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
}

/** Runs the built CLI to completion. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BUILT_CLI, ...args], {
    cwd: REPO_ROOT,
    env: cliEnv(env),
    encoding: "utf8",
    timeout: 15_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
