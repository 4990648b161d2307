import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { PathWatch } from "../config/path-watch.js";
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
 * The authorisation file in force, reloaded atomically when it changes (watched as the limit
 * config is: config/path-watch.ts) and on `reload()` (SIGHUP). A bad new file keeps the old one.
 */
export class AuthFileWatcher {
  private policy: AuthPolicy | undefined;
  private lastDigest: string | undefined;
  private readonly watch: PathWatch;

  constructor(private readonly opts: AuthFileWatcherOptions) {
    this.watch = new PathWatch(
      opts.path,
      opts.clock,
      opts.debounceMs ?? 200,
      () => this.load(false),
      opts.onError,
    );
  }

  /** The file in force; `start()` has loaded one. */
  get current(): AuthPolicy {
    if (this.policy === undefined) throw new Error("AuthFileWatcher is not started");
    return this.policy;
  }

  /** Watches, then loads; throws the first file's error (a server does not start on a bad one). */
  start(): AuthPolicy {
    this.watch.start();
    let first: Error | undefined;
    if (!this.loadWith(true, (err) => (first = err))) {
      this.watch.stop();
      throw first!;
    }
    return this.current;
  }

  /** Loads now; false (old file kept, `onError` told) when the file is invalid. */
  reload(): boolean {
    return this.load(true);
  }

  stop(): void {
    this.watch.stop();
  }

  private load(force: boolean): boolean {
    return this.loadWith(force, this.opts.onError);
  }

  private loadWith(force: boolean, onError: (err: Error) => void): boolean {
    let text: string;
    try {
      text = readFileSync(this.opts.path, "utf8");
    } catch (err) {
      this.lastDigest = undefined;
      onError(new Error(`cannot read the auth file ${this.opts.path}: ${(err as Error).message}`));
      return false;
    }
    const digest = createHash("sha256").update(text).digest("hex");
    if (!force && digest === this.lastDigest) return true;
    this.lastDigest = digest;
    let policy: AuthPolicy;
    try {
      policy = parseAuthFile(this.opts.path, text);
    } catch (err) {
      onError(err as Error);
      return false;
    }
    this.policy = policy;
    this.opts.onSwap?.(policy);
    return true;
  }
}
