import { type FSWatcher, realpathSync, statSync, watch } from "node:fs";
import { basename, dirname } from "node:path";
import type { Clock, Timer } from "../core/clock.js";

/**
 * Calls `onChange` (debounced) when the file or directory at `path` may have changed. It watches
 * directories, never the files themselves: editors save by writing a new file and renaming it
 * over the old one, and a Kubernetes ConfigMap volume swaps a `..data` symlink, both of which
 * leave a watch on the old file watching nothing. So:
 * - for a file path, its parent directory is watched and any event there triggers a change;
 * - for a directory path, the directory is watched, and so is its parent for the directory's own
 *   name, so a swapped symlink (`current -> v2`) is followed to the new target.
 * The limit config's watcher (watch.ts) and the authorisation file's (security/) both use it;
 * each skips a change whose content is what it last loaded.
 */
export class PathWatch {
  private readonly watchers = new Map<string, FSWatcher>();
  private watchedTarget: string | undefined;
  private timer: Timer | undefined;
  private running = false;

  constructor(
    private readonly path: string,
    private readonly clock: Clock,
    private readonly debounceMs: number,
    private readonly onChange: () => void,
    private readonly onError: (err: Error) => void,
  ) {}

  start(): void {
    this.running = true;
    this.watchAll();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    this.watchedTarget = undefined;
  }

  private schedule = (): void => {
    if (!this.running) return;
    this.timer?.cancel();
    this.timer = this.clock.after(this.debounceMs, () => {
      this.timer = undefined;
      if (!this.running) return;
      this.watchAll();
      this.onChange();
    });
  };

  /** (Re)establishes the watches; a directory whose symlink now points elsewhere is re-watched. */
  private watchAll(): void {
    if (isDirectory(this.path)) {
      const target = realpathOrUndefined(this.path);
      if (target !== this.watchedTarget) {
        this.unwatch(this.path);
        if (this.watchDir(this.path)) this.watchedTarget = target;
      }
      const name = basename(this.path);
      this.watchDir(dirname(this.path), (file) => file === null || file === name);
    } else {
      this.watchDir(dirname(this.path));
    }
  }

  private watchDir(dir: string, relevant?: (file: string | null) => boolean): boolean {
    if (this.watchers.has(dir)) return true;
    let w: FSWatcher;
    try {
      // Not persistent: a watcher alone should not keep the process alive.
      w = watch(dir, { persistent: false }, (_event, file) => {
        if (!relevant || relevant(file === null ? null : String(file))) this.schedule();
      });
    } catch (err) {
      this.onError(new Error(`cannot watch ${dir} for changes: ${(err as Error).message}`));
      return false;
    }
    w.on("error", () => {
      // Typically the directory itself went away; re-watch on the next event or reload.
      this.unwatch(dir);
      this.schedule();
    });
    this.watchers.set(dir, w);
    return true;
  }

  private unwatch(dir: string): void {
    this.watchers.get(dir)?.close();
    this.watchers.delete(dir);
    if (dir === this.path) this.watchedTarget = undefined;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}
