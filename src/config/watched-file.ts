import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Clock } from "../core/clock.js";
import { PathWatch } from "./path-watch.js";

export interface WatchedFileOptions<T> {
  readonly path: string;
  readonly clock: Clock;
  /** The file's text as what it configures; throws (naming the problem) when it is invalid. */
  readonly parse: (file: string, text: string) => T;
  /** The error for a file that cannot be read. */
  readonly unreadable: (err: Error) => Error;
  /** Each new valid file after the first. */
  readonly onSwap?: (value: T) => void;
  /** A changed file is invalid or unreadable: the one in force stays. */
  readonly onError: (err: Error) => void;
  readonly debounceMs?: number;
}

/**
 * A small file that configures something and is reloaded atomically when it changes (watched as
 * the limit config is: path-watch.ts) and on `reload()` (SIGHUP): parsed whole, a bad file
 * reported and the one in force kept; a save that changes nothing is skipped. The authorisation
 * file and the RLQS mapping are these.
 */
export class WatchedFile<T> {
  private value: T | undefined;
  private lastDigest: string | undefined;
  private readonly watch: PathWatch;

  constructor(private readonly opts: WatchedFileOptions<T>) {
    this.watch = new PathWatch(
      opts.path,
      opts.clock,
      opts.debounceMs ?? 200,
      () => this.load(false, opts.onError),
      opts.onError,
    );
  }

  /** Watches, then loads; throws the first file's error (a server does not start on a bad one). */
  start(): T {
    this.watch.start();
    let first: Error | undefined;
    if (!this.load(true, (err) => (first = err), false)) {
      this.watch.stop();
      throw first!;
    }
    return this.current;
  }

  /** The file in force; `start()` has loaded one. */
  get current(): T {
    if (this.value === undefined) throw new Error(`${this.opts.path} is not loaded: start() first`);
    return this.value;
  }

  /** Loads now; false (the old one kept, `onError` told) when the file is invalid. */
  reload(): boolean {
    return this.load(true, this.opts.onError);
  }

  stop(): void {
    this.watch.stop();
  }

  private load(force: boolean, onError: (err: Error) => void, swap = true): boolean {
    let text: string;
    try {
      text = readFileSync(this.opts.path, "utf8");
    } catch (err) {
      this.lastDigest = undefined;
      onError(this.opts.unreadable(err as Error));
      return false;
    }
    const digest = createHash("sha256").update(text).digest("hex");
    if (!force && digest === this.lastDigest) return true;
    this.lastDigest = digest;
    let value: T;
    try {
      value = this.opts.parse(this.opts.path, text);
    } catch (err) {
      onError(err as Error);
      return false;
    }
    this.value = value;
    if (swap) this.opts.onSwap?.(value);
    return true;
  }
}
