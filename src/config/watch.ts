import { createHash } from "node:crypto";
import { type FSWatcher, realpathSync, statSync, watch } from "node:fs";
import { basename, dirname } from "node:path";
import { type Clock, systemClock, type Timer } from "../core/clock.js";
import { type ConfigDiff, diffConfigs, LimitRemovalError, removalProblems } from "./diff.js";
import type { ConfigError } from "./errors.js";
import { type CompileOptions, type ConfigSource, compileSources, readSources } from "./load.js";
import type { LimitConfig } from "./types.js";

export interface ConfigWatcherOptions {
  /** A YAML file or a directory of them, as for `loadConfig`. */
  readonly path: string;
  /**
   * Called with each new valid config and, from the second on, what changed since the last one.
   * Never called with an invalid one.
   */
  readonly onSwap: (config: LimitConfig, diff: ConfigDiff | undefined) => void;
  /** Called when a reload fails; the last swapped config stays in force. */
  readonly onError: (err: ConfigError | Error) => void;
  /** Quiet period after the last file event before reloading. Editors write in bursts. */
  readonly debounceMs?: number;
  /**
   * Apply reloads that remove a domain or a rule. Off by default: such a reload is refused (as
   * invalid, through `onError`), because what it removes becomes unlimited without a word. The
   * first load is never refused: starting the process is the explicit way to apply any config.
   */
  readonly allowRemoval?: boolean;
  /** Times the debounce; the system clock when absent. */
  readonly clock?: Clock;
  /** How the files are compiled (`mergeDomains`). */
  readonly compile?: CompileOptions;
}

/**
 * Reloads the config when its files change, and on demand (`reload()`, which the server calls on
 * SIGHUP). It watches directories, never the files themselves: editors save by writing a new file
 * and renaming it over the old one, and a Kubernetes ConfigMap volume swaps a `..data` symlink,
 * both of which leave a watch on the old file watching nothing. So:
 * - for a file path, its parent directory is watched and any event there triggers a reload;
 * - for a directory path, the directory is watched, and so is its parent for the directory's own
 *   name, so a swapped symlink (`current -> v2`) is followed to the new target.
 * Reloads triggered by events are skipped when the files' content is byte-for-byte what was last
 * loaded, so chmods, touches and unrelated files cause no swap. `reload()` always loads and swaps.
 */
export class ConfigWatcher {
  private readonly path: string;
  private readonly compileOptions: CompileOptions;
  private readonly onSwap: (config: LimitConfig, diff: ConfigDiff | undefined) => void;
  private readonly allowRemoval: boolean;
  private current: LimitConfig | undefined;
  private readonly onError: (err: ConfigError | Error) => void;
  private readonly debounceMs: number;
  private readonly clock: Clock;
  private readonly watchers = new Map<string, FSWatcher>();
  private watchedTarget: string | undefined;
  private timer: Timer | undefined;
  private lastFingerprint: string | undefined;
  private running = false;

  constructor(options: ConfigWatcherOptions) {
    const debounceMs = options.debounceMs ?? 200;
    if (!Number.isFinite(debounceMs) || debounceMs < 0) {
      throw new RangeError(`debounceMs must be a non-negative number of milliseconds, got ${debounceMs}`);
    }
    this.path = options.path;
    this.compileOptions = options.compile ?? {};
    this.onSwap = options.onSwap;
    this.onError = options.onError;
    this.debounceMs = debounceMs;
    this.allowRemoval = options.allowRemoval ?? false;
    this.clock = options.clock ?? systemClock;
  }

  /**
   * Starts watching, then loads once (swap or error), so no change between an initial load and
   * the watch can be missed. Returns whether that first load was valid.
   */
  start(): boolean {
    if (this.running) throw new Error("ConfigWatcher is already started");
    this.running = true;
    this.watchAll();
    return this.reload();
  }

  /** Loads and validates now; swaps on success, reports on failure. Returns whether it was valid. */
  reload(): boolean {
    return this.load(true);
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    this.watchedTarget = undefined;
  }

  private load(force: boolean): boolean {
    let sources: ConfigSource[];
    try {
      sources = readSources(this.path);
    } catch (err) {
      this.lastFingerprint = undefined;
      this.onError(err as Error);
      return false;
    }
    const fingerprint = fingerprintOf(sources);
    if (!force && fingerprint === this.lastFingerprint) return true;
    this.lastFingerprint = fingerprint;
    let config: LimitConfig;
    try {
      config = compileSources(sources, this.compileOptions);
    } catch (err) {
      this.onError(err as Error);
      return false;
    }
    const diff = this.current && diffConfigs(this.current, config);
    if (this.current && diff && !this.allowRemoval) {
      const problems = removalProblems(this.current, diff);
      if (problems.length > 0) {
        this.onError(new LimitRemovalError(problems));
        return false;
      }
    }
    this.current = config;
    this.onSwap(config, diff);
    return true;
  }

  private schedule = (): void => {
    if (!this.running) return;
    this.timer?.cancel();
    this.timer = this.clock.after(this.debounceMs, () => {
      this.timer = undefined;
      if (!this.running) return;
      this.watchAll();
      this.load(false);
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
      this.onError(new Error(`cannot watch ${dir} for config changes: ${(err as Error).message}`));
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

function fingerprintOf(sources: readonly ConfigSource[]): string {
  const h = createHash("sha256");
  for (const s of sources) h.update(s.file).update("\0").update(s.text).update("\0");
  return h.digest("hex");
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
