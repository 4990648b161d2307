import { resolveKey } from "../config/config.js";
import type { LimitConfig, Resolved } from "../config/types.js";
import type { Counter } from "../core/counter.js";

/** What a wire key resolved to, plus the engine's counter once one was made for it. */
export interface CachedKey {
  /** The rule and keys; `undefined`: no limit applies; a string: the key is malformed. */
  readonly resolved: Resolved | undefined | string;
  /** A reference into the engine, valid while `!counter.removed`; saves a second map look-up. */
  counter: Counter | undefined;
}

/**
 * Wire key -> rule (and counter), cached: parsing a key and walking the descriptor tree costs more
 * than the counting, and gateways send the same keys every 100 ms. One look-up per entry matters:
 * with many keys each look-up is a cache miss. The cache belongs to one config (a swap replaces it)
 * and is bounded: when full it starts over rather than grow.
 */
export class KeyResolver {
  private readonly cache = new Map<string, CachedKey>();
  constructor(
    readonly config: LimitConfig,
    private readonly maxEntries = 1_000_000,
  ) {}

  lookup(key: string): CachedKey {
    let hit = this.cache.get(key);
    if (hit === undefined) {
      hit = { resolved: resolveKey(this.config, key), counter: undefined };
      if (this.cache.size >= this.maxEntries) this.cache.clear();
      this.cache.set(key, hit);
    }
    return hit;
  }

  resolve(key: string): Resolved | undefined | string {
    return this.lookup(key).resolved;
  }
}
