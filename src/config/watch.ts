import { createHash } from "node:crypto";
import { type Clock, systemClock } from "../core/clock.js";
import { type ConfigDiff, diffConfigs, LimitRemovalError, removalProblems } from "./diff.js";
import type { ConfigError } from "./errors.js";
import { type CompileOptions, type ConfigSource, compileSources, readSources } from "./load.js";
import { PathWatch } from "./path-watch.js";
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
 * SIGHUP). The files are watched through their directories (path-watch.ts: editors' renames and
 * Kubernetes' swapped symlinks are followed). Reloads triggered by events are skipped when the files' content is byte-for-byte what was last
 * loaded, so chmods, touches and unrelated files cause no swap. `reload()` always loads and swaps.
 */
export class ConfigWatcher {
  private readonly path: string;
  private readonly compileOptions: CompileOptions;
  private readonly onSwap: (config: LimitConfig, diff: ConfigDiff | undefined) => void;
  private readonly allowRemoval: boolean;
  private current: LimitConfig | undefined;
  private readonly onError: (err: ConfigError | Error) => void;
  private readonly watch: PathWatch;
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
    this.allowRemoval = options.allowRemoval ?? false;
    this.watch = new PathWatch(
      this.path,
      options.clock ?? systemClock,
      debounceMs,
      () => this.load(false),
      (err) => this.onError(err),
    );
  }

  /**
   * Starts watching, then loads once (swap or error), so no change between an initial load and
   * the watch can be missed. Returns whether that first load was valid.
   */
  start(): boolean {
    if (this.running) throw new Error("ConfigWatcher is already started");
    this.running = true;
    this.watch.start();
    return this.reload();
  }

  /** Loads and validates now; swaps on success, reports on failure. Returns whether it was valid. */
  reload(): boolean {
    return this.load(true);
  }

  stop(): void {
    this.running = false;
    this.watch.stop();
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
}

function fingerprintOf(sources: readonly ConfigSource[]): string {
  const h = createHash("sha256");
  for (const s of sources) h.update(s.file).update("\0").update(s.text).update("\0");
  return h.digest("hex");
}
