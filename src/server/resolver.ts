import { resolveKey } from "../config/config.js";
import type { LimitConfig, Resolved } from "../config/types.js";

/**
 * Counter key -> rule, cached: parsing a key and walking the descriptor tree costs more than the
 * counting itself, and gateways send the same keys every 100 ms. The cache belongs to one config
 * (a swap replaces it) and is bounded: when full it starts over rather than grow.
 */
export class KeyResolver {
  private readonly cache = new Map<string, Resolved | undefined | string>();
  constructor(
    readonly config: LimitConfig,
    private readonly maxEntries = 1_000_000,
  ) {}

  resolve(key: string): Resolved | undefined | string {
    let r = this.cache.get(key);
    if (r === undefined && !this.cache.has(key)) {
      r = resolveKey(this.config, key);
      if (this.cache.size >= this.maxEntries) this.cache.clear();
      this.cache.set(key, r);
    }
    return r;
  }
}
