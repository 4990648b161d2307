import { WatchedFile } from "../config/watched-file.js";
import type { Clock } from "../core/clock.js";
import { type AuthPolicy, parseAuthFile } from "./auth-file.js";

export interface AuthFileWatcherOptions {
  readonly path: string;
  readonly clock: Clock;
  /** Called with each new valid file (the first included). */
  readonly onSwap?: (policy: AuthPolicy) => void;
  /** A reload failed; the previous file stays in force. */
  readonly onError: (err: Error) => void;
  readonly debounceMs?: number;
}

/**
 * The authorisation file in force, reloaded atomically when it changes and on `reload()` (SIGHUP)
 * (config/watched-file.ts). A bad new file keeps the old one.
 */
export class AuthFileWatcher {
  private readonly file: WatchedFile<AuthPolicy>;

  constructor(private readonly opts: AuthFileWatcherOptions) {
    this.file = new WatchedFile({
      path: opts.path,
      clock: opts.clock,
      debounceMs: opts.debounceMs,
      parse: parseAuthFile,
      unreadable: (err) => new Error(`cannot read the auth file ${opts.path}: ${err.message}`),
      onSwap: opts.onSwap,
      onError: opts.onError,
    });
  }

  /** The file in force; `start()` has loaded one. */
  get current(): AuthPolicy {
    return this.file.current;
  }

  /** Watches, then loads; throws the first file's error (a server does not start on a bad one). */
  start(): AuthPolicy {
    const policy = this.file.start();
    this.opts.onSwap?.(policy);
    return policy;
  }

  /** Loads now; false (old file kept, `onError` told) when the file is invalid. */
  reload(): boolean {
    return this.file.reload();
  }

  stop(): void {
    this.file.stop();
  }
}
