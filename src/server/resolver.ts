import { randomInt } from "node:crypto";
import { resolveKey } from "../config/config.js";
import type { LimitConfig, Resolved } from "../config/types.js";
import type { Counter } from "../core/counter.js";

/** What a wire key resolved to, plus the engine's counter once one was made for it. */
export interface CachedKey {
  readonly key: string;
  /** The rule and keys; `undefined`: no limit applies; a string: the key is malformed. */
  readonly resolved: Resolved | undefined | string;
  /** A reference into the engine, valid while `!counter.removed`; saves a second map look-up. */
  counter: Counter | undefined;
  /** Under a `fair_share` limit: the group's counter, likewise. */
  parentCounter?: Counter | undefined;
  /** Index + 1 in this table: what gateways may send instead of the key string. */
  readonly handle: number;
  /** Where the shard key lands, once a cluster member's ownership check asked (`Placed`). */
  point: number | undefined;
}

/**
 * Wire key -> rule (and counter), cached: parsing a key and walking the descriptor tree costs more
 * than the counting, and gateways send the same keys every 100 ms. With many keys each string
 * look-up is a cache miss on a freshly decoded string, so entries also get numeric handles that
 * gateways send back instead: an array index, no string decoded or hashed.
 *
 * The table belongs to one config (a swap replaces it) and is bounded, in entries and in the
 * characters of its keys: when full it starts over under a new epoch rather than grow, and
 * handles of an old epoch are refused, never misread. A malformed key gets no entry at all
 * (parsing it again is cheap, and caching it would let junk from one caller crowd out the keys
 * of all the others and reset everyone's handles).
 */
export class KeyResolver {
  private readonly byKey = new Map<string, CachedKey>();
  private entries: CachedKey[] = [];
  private chars = 0;
  /** Random per table, so no handle outlives the table (or the process) that issued it. */
  epoch = randomInt(1, 0x7fff_ffff);

  constructor(
    readonly config: LimitConfig,
    private readonly maxEntries = 1_000_000,
    /** 64 Mi characters: ~128 MB of key strings at the most. */
    private readonly maxChars = 64 * 1024 * 1024,
  ) {}

  lookup(key: string): CachedKey {
    let hit = this.byKey.get(key);
    if (hit === undefined) {
      const resolved = resolveKey(this.config, key);
      if (typeof resolved === "string")
        return { key, resolved, counter: undefined, handle: 0, point: undefined };
      if (this.entries.length >= this.maxEntries || this.chars + key.length > this.maxChars) {
        this.byKey.clear();
        this.entries = [];
        this.chars = 0;
        this.epoch = this.epoch === 0x7fff_ffff ? 1 : this.epoch + 1;
      }
      hit = { key, resolved, counter: undefined, handle: this.entries.length + 1, point: undefined };
      this.entries.push(hit);
      this.byKey.set(key, hit);
      this.chars += key.length;
    }
    return hit;
  }

  /** The entry a handle of `epoch` names, or undefined if this table did not issue it. */
  byHandle(epoch: number, handle: number): CachedKey | undefined {
    return epoch === this.epoch ? this.entries[handle - 1] : undefined;
  }

  resolve(key: string): Resolved | undefined | string {
    return this.lookup(key).resolved;
  }
}
