import type { Etcd3, Watcher } from "etcd3";
import { type Clock, sleep, type Timer } from "../core/clock.js";
import type { Log } from "./log.js";

export interface PrefixViewOptions {
  client: Etcd3;
  /** Everything under this prefix is mirrored; keys are reported without it. */
  prefix: string;
  onChange: (entries: ReadonlyMap<string, string>) => void;
  log: Log;
  /** Times the waits before listing again. */
  clock: Clock;
  /** Wait before listing again after etcd could not be reached. */
  retryMs?: number;
}

/**
 * A local mirror of an etcd prefix: list it at a revision, then watch from the next one, so no
 * change between the two is missed. When etcd is unreachable the mirror keeps its last contents
 * (static stability); the watcher reconnects by itself and resumes. When it cannot resume (the
 * revision was compacted away, or the watch failed) the mirror lists afresh and watches again.
 */
export class PrefixView {
  private entries = new Map<string, string>();
  private watcher: Watcher | undefined;
  private stopped = false;
  private retry: Timer | undefined;
  revision = 0;
  /** Times the mirror was rebuilt from a fresh list (the first included). */
  syncs = 0;

  constructor(private readonly opts: PrefixViewOptions) {}

  get current(): ReadonlyMap<string, string> {
    return this.entries;
  }

  /** Resolves after the first successful list; keeps retrying until then. */
  async start(): Promise<void> {
    while (!this.stopped) {
      if (await this.sync()) return;
      // Ref'd, as before: starting waits for etcd however long it takes.
      await sleep(this.opts.clock, this.opts.retryMs ?? 500, { ref: true });
    }
  }

  private async sync(): Promise<boolean> {
    const { client, prefix, log } = this.opts;
    try {
      const res = await client.getAll().prefix(prefix).exec();
      if (this.stopped) return true;
      const next = new Map<string, string>();
      for (const kv of res.kvs) next.set(kv.key.toString().slice(prefix.length), kv.value.toString());
      this.entries = next;
      this.revision = Number(res.header.revision);
      this.syncs++;
      this.opts.onChange(this.entries);
      await this.watch(this.revision + 1);
      return true;
    } catch (err) {
      log.warn({ err: (err as Error).message, prefix }, "etcd: cannot list; keeping the last known state");
      return false;
    }
  }

  private async watch(fromRevision: number): Promise<void> {
    const { client, prefix, log } = this.opts;
    await this.watcher?.cancel().catch(() => {});
    const w = await client.watch().prefix(prefix).startRevision(String(fromRevision)).create();
    if (this.stopped) {
      await w.cancel().catch(() => {});
      return;
    }
    this.watcher = w;
    w.on("put", (kv) => {
      this.entries.set(kv.key.toString().slice(prefix.length), kv.value.toString());
      this.revision = Math.max(this.revision, Number(kv.mod_revision));
      this.opts.onChange(this.entries);
    });
    w.on("delete", (kv) => {
      this.entries.delete(kv.key.toString().slice(prefix.length));
      this.revision = Math.max(this.revision, Number(kv.mod_revision));
      this.opts.onChange(this.entries);
    });
    w.on("error", (err) => {
      // Not recoverable by reconnecting (e.g. compacted): list again and watch from there.
      log.warn({ err: err.message, prefix }, "etcd: watch failed; listing again");
      if (this.watcher === w) this.watcher = undefined;
      this.scheduleResync();
    });
  }

  private scheduleResync(): void {
    if (this.stopped || this.retry) return;
    // Ref'd, as before: a mirror that lost its watch keeps trying to list until stopped.
    this.retry = this.opts.clock.after(
      this.opts.retryMs ?? 500,
      async () => {
        this.retry = undefined;
        if (!(await this.sync())) this.scheduleResync();
      },
      { ref: true },
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.retry?.cancel();
    await this.watcher?.cancel().catch(() => {});
    this.watcher = undefined;
  }
}
