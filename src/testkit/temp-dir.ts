import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** Directories made by `tempDir` in this process and not yet removed. */
const made = new Set<string>();
let hooked = false;

/** Removes every directory `tempDir` made in this process (recursively; gone ones are no error). */
export function removeTempDirs(): void {
  for (const dir of made) {
    rmSync(dir, { recursive: true, force: true });
    made.delete(dir);
  }
}

/** Signals that end a process by default, and with which something stops a test process. */
const ENDING = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

/**
 * A signal nothing else handles would end the process without its "exit" event (vitest stops
 * its fork workers with SIGTERM): remove the directories, then let the signal do what it would
 * have done (no listener left: the default, ending the process by that signal). When something
 * else handles it, that handler decides, and the "exit" hook removes them if it ends the process.
 */
function onSignal(signal: NodeJS.Signals): void {
  if (process.listenerCount(signal) > 1) return;
  removeTempDirs();
  for (const s of ENDING) process.off(s, onSignal);
  process.kill(process.pid, signal);
}

/**
 * A new empty directory under the OS temp dir, named `prefix` plus random characters (mkdtemp),
 * removed with all it holds when this process exits (a vitest worker, a bench, a CLI run) or is
 * ended by SIGTERM, SIGINT or SIGHUP, or earlier by `removeTempDirs()` (an afterAll). For tests
 * and benches: nothing they write to /tmp outlives them. SIGKILL runs nothing: its dirs stay.
 */
export function tempDir(prefix: string): string {
  if (!hooked) {
    process.on("exit", removeTempDirs);
    for (const s of ENDING) process.on(s, onSignal);
    hooked = true;
  }
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}
