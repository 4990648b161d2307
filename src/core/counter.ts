import type { Algorithm } from "./algorithms/names.js";
import type { ClassTable } from "./class-table.js";
import type { ClientTable } from "./clients.js";
import type { LeaseTable } from "./concurrency.js";
import type { Contention } from "./contention.js";

/**
 * One counter's state: a few numbers. A single class for every algorithm keeps V8's property
 * access monomorphic on the hot path; each algorithm documents what `t`, `x` and `y` mean to it.
 */
export class Counter {
  algorithm: Algorithm;
  /**
   * The shard key that placed this counter (its own key unless a limit co-locates it with a
   * group's), so the counters of a slice can be found and handed to a new owner.
   */
  shard: string;
  /**
   * Where `shard` lands in the key space, when the engine was given a point function (else 0):
   * computed once at creation, it files the counter in the engine's index by slice.
   */
  point = 0;
  /**
   * Whether this counter's count is whole: it was handed over by the previous owner, so a
   * window-to-date total that gateways re-send after a generation change is already in it.
   */
  complete = false;
  /** Fixed/sliding window: current window start. Token bucket: last refill time. */
  t = 0;
  /** Fixed/sliding window: units in the current window. Token bucket: tokens. Concurrency: units held by leases. */
  x = 0;
  /** Sliding window: units in the previous window. */
  y = 0;
  /** After this the counter is indistinguishable from a fresh one and may be dropped. */
  expiresAt = 0;
  /** Batched mode: the gateways reporting this key, with their demand. */
  clients: ClientTable | undefined = undefined;
  /**
   * Batched mode under `fair_share` or with priority classes: the same gateways by class and
   * tenant, which divide the supply.
   */
  classes: ClassTable | undefined = undefined;
  /**
   * Changed since its state was last taken for a standby copy (`Engine.takeChanged`): a flag here
   * and the key in the engine's list, cheaper on the hot path than a Set of keys.
   */
  changed = false;
  /** Set when the engine dropped or replaced this counter, so a caller's cached reference is refreshed. */
  removed = false;
  /**
   * Synchronous decisions divided by priority class and fair share, made once a request with a
   * class or a subject (or a limit with `fair_share`/`reserve`) reaches this counter.
   */
  contention: Contention | undefined = undefined;
  /** Concurrency: held leases by id. */
  leases: LeaseTable | undefined = undefined;

  constructor(algorithm: Algorithm, shard = "") {
    this.algorithm = algorithm;
    this.shard = shard;
  }
}
