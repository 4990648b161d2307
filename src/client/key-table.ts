import { decodeKey, encodeKey, escapePart } from "../config/key.js";
import { PRIORITY_KEY, splitPriority } from "../config/priority.js";
import {
  DEFAULT_PRIORITY,
  type DescriptorEntry,
  type LimitConfig,
  PRIORITIES,
  type Priority,
  type Resolved,
} from "../config/types.js";
import { InvalidArgumentError } from "../core/errors.js";
import { keyPoint } from "../keyspace/hash.js";
import { ClientKey } from "./client-key.js";
import { sameLimit } from "./same-limit.js";

/** A request's descriptor as Envoy sends it: `decide` accepts it in place of a key string. */
export interface Descriptor {
  domain: string;
  entries: readonly DescriptorEntry[];
}

/** A key no limit applies to: always admitted, never reported. */
export class Unlimited {
  #lastUsed = 0;
  /** The class its key's `priority` entry named (the host guard sheds by it). */
  constructor(readonly priority: Priority = DEFAULT_PRIORITY) {}
  get lastUsed(): number {
    return this.#lastUsed;
  }
  touch(now: number): void {
    this.#lastUsed = now;
  }
}

export type Entry = ClientKey | Unlimited;

export interface KeyTableOptions {
  /** Keys unused this long are forgotten. */
  readonly idleKeyMs: number;
  /** Counters tracked at most; the least recently used idle ones go first. */
  readonly maxKeys: number;
  readonly reportIntervalMs: number;
}

/**
 * Request keys resolved to their counters with the limits in force. Request keys that share a
 * counter share one ClientKey; a config swap resolves every key again on its next use, keeping a
 * counter whose limit is unchanged and carrying the counts of one that changed into its successor.
 * Idle keys are forgotten, and the number of counters is capped.
 */
export class KeyTable {
  #config: LimitConfig | undefined;
  /** Request key -> its counter (or Unlimited). */
  private readonly keys = new Map<string, Entry>();
  /** Counter key -> counter. */
  private readonly counters = new Map<string, ClientKey>();
  private lastSweep = 0;

  constructor(
    private readonly opts: KeyTableOptions,
    /** A new counter: it is reported at the next interval. */
    private readonly added: (k: ClientKey) => void,
  ) {}

  /** The limits in force; undefined until fetched. */
  get config(): LimitConfig | undefined {
    return this.#config;
  }

  /** Swaps in new limits: keys are resolved again on next use; counts carry over. */
  setConfig(config: LimitConfig): void {
    const first = this.#config === undefined;
    this.#config = config;
    if (!first) this.keys.clear();
  }

  /** The key's counter, resolving it on first sight; undefined before the limits are known. */
  entry(key: string | Descriptor, cost: number): Entry | undefined {
    checkCost(cost);
    const name = typeof key === "string" ? key : descriptorKey(key);
    const hit = this.keys.get(name);
    if (hit !== undefined) return hit;
    const config = this.#config;
    if (config === undefined) return undefined;
    const e = this.resolve(config, name);
    this.keys.set(name, e);
    return e;
  }

  private resolve(config: LimitConfig, name: string): Entry {
    const d = decodeKey(name);
    if (typeof d === "string") throw new InvalidArgumentError(`${d}: ${JSON.stringify(name.slice(0, 100))}`);
    // A priority entry keys no counter on the owner.
    const split = splitPriority(d.entries);
    if (typeof split === "string") throw new InvalidArgumentError(split);
    const r = config.resolve(d.domain, split.entries);
    if (r === undefined || r.rule.unlimited) return new Unlimited(split.priority);
    // Each class of a key is its own counter here, reported under the key with its `priority`
    // entry: the owner divides the limit among classes from those reports.
    const key =
      split.priority === DEFAULT_PRIORITY
        ? reportKey(r)
        : `${reportKey(r)}/${PRIORITY_KEY}=${split.priority}`;
    let k = this.counters.get(key);
    if (k !== undefined && k.rule !== r.rule && sameLimit(k.rule, r.rule)) {
      k.adoptRule(r.rule); // a reload that left this limit as it was: keep the policy in force
    } else if (k === undefined || k.rule !== r.rule) {
      const fresh = new ClientKey(key, r.rule, keyPoint(r.shardKey), split.priority);
      k?.replaceWith(fresh);
      k = fresh;
      this.counters.set(key, k);
      if (!k.dirty) this.added(k);
    }
    return k;
  }

  /** Whether `k` still counts for its key (a config change may have replaced it). */
  isCurrent(k: ClientKey): boolean {
    return this.counters.get(k.key) === k;
  }

  /**
   * The counter that counts for `k`'s key now: `k` itself, or the one made after `k` was swept as
   * idle (or `k` again, tracked anew): a ticket settled after its key went idle still reaches a
   * counter that reports.
   */
  revive(k: ClientKey): ClientKey {
    const now = this.counters.get(k.key);
    if (now !== undefined) return now;
    this.counters.set(k.key, k);
    return k;
  }

  /** The counter for a counter key, if tracked. */
  counter(key: string): ClientKey | undefined {
    return this.counters.get(key);
  }

  /** Counters tracked. */
  get size(): number {
    return this.counters.size;
  }

  fallbackCount(): number {
    let n = 0;
    for (const k of this.counters.values()) if (k.inFallback) n++;
    return n;
  }

  /** Counter keys currently decided by the local fallback share, at most `max`. */
  fallbackKeys(max: number): string[] {
    const out: string[] = [];
    for (const k of this.counters.values()) {
      if (k.inFallback) out.push(k.key);
      if (out.length >= max) break;
    }
    return out;
  }

  /** Forgets idle keys, at most once a second. */
  sweepEvery(now: number): void {
    if (now - this.lastSweep < 1000) return;
    this.lastSweep = now;
    this.sweep(now);
  }

  private sweep(now: number): void {
    const cutoff = now - this.opts.idleKeyMs;
    for (const [name, e] of this.keys) {
      if (e.lastUsed < cutoff && (!(e instanceof ClientKey) || e.idle)) this.keys.delete(name);
    }
    for (const [name, k] of this.counters) {
      if (k.lastUsed < cutoff && k.idle) this.counters.delete(name);
    }
    if (this.counters.size > this.opts.maxKeys) {
      // Oldest first (Map order is insertion order); keys with counts to report stay.
      const recent = now - this.opts.reportIntervalMs * 10;
      for (const [name, k] of this.counters) {
        if (this.counters.size <= this.opts.maxKeys) break;
        if (k.lastUsed < recent && k.idle) this.counters.delete(name);
      }
      for (const [name, e] of this.keys) {
        if (e instanceof ClientKey && this.counters.get(e.key) !== e) this.keys.delete(name);
      }
    }
    // Request keys (unlimited ones, and names sharing a counter) are capped too: dropping one
    // only means resolving it again on its next use.
    if (this.keys.size > 2 * this.opts.maxKeys) {
      for (const name of this.keys.keys()) {
        if (this.keys.size <= this.opts.maxKeys) break;
        this.keys.delete(name);
      }
    }
  }
}

/**
 * The key a counter is reported under: its counter key, but for a tenant charged only to its
 * group's fair-share limit (no limit of its own) the group's key with the tenant's entry, so the
 * owner, resolving it again, knows whom to attribute the units to (each tenant its own entry).
 */
export function reportKey(r: Resolved): string {
  const by = r.rule.fairShare?.by;
  if (r.subject === undefined || r.parent !== undefined || by === undefined) return r.counterKey;
  return `${r.counterKey}/${escapePart(by)}=${escapePart(r.subject.id)}`;
}

/** `key` with a `priority` entry naming class `p` (a request's class, given apart). */
export function withPriority(key: string | Descriptor, p: Priority): string | Descriptor {
  if (!(PRIORITIES as readonly string[]).includes(p)) {
    throw new InvalidArgumentError(`priority ${JSON.stringify(p)} is not one of ${PRIORITIES.join(", ")}`);
  }
  return typeof key === "string"
    ? `${key}/${PRIORITY_KEY}=${p}`
    : { domain: key.domain, entries: [...key.entries, { key: PRIORITY_KEY, value: p }] };
}

function descriptorKey(d: Descriptor): string {
  if (typeof d !== "object" || d === null || typeof d.domain !== "string" || !Array.isArray(d.entries)) {
    throw new InvalidArgumentError("a descriptor needs a domain and an entries array");
  }
  return encodeKey(d.domain, d.entries);
}

export function checkCost(cost: number): void {
  if (!(cost >= 0) || cost === Number.POSITIVE_INFINITY) {
    throw new InvalidArgumentError(`cost must be a finite number >= 0, got ${cost}`);
  }
}
