import type { LimitRule } from "../config/types.js";

/**
 * The predicted cost of a key's next request: the moving average of the costs its settled
 * requests measured, starting from the rule's `resource.prior` (1 unit a request for a limit
 * without `resource`). The mean, not a quantile: what is charged at decision time is settled to
 * the measured cost afterwards, so the prediction only has to be right on average for the
 * charges the owner divides the quota by to match the use. The first measurements are averaged
 * with the prior as equals (weight 1/(n+1)) until that weight falls to `smoothing`, so a wrong
 * prior is forgotten within a few requests, and a heavy tail moves the average by at most
 * `smoothing` of one outlier afterwards.
 */
export class CostPredictor {
  #mean: number;
  #seen = 0;
  readonly #smoothing: number;

  constructor(prior: number, smoothing: number) {
    this.#mean = prior;
    this.#smoothing = smoothing;
  }

  static forRule(rule: LimitRule): CostPredictor {
    return new CostPredictor(rule.resource?.prior ?? 1, rule.resource?.smoothing ?? 0.05);
  }

  /** The cost to charge for the next request. */
  get value(): number {
    return this.#mean;
  }

  /** Costs measured so far. */
  get seen(): number {
    return this.#seen;
  }

  /** A request's measured cost (finite, >= 0: checked by the caller). */
  observe(cost: number): void {
    this.#seen++;
    const w = Math.max(this.#smoothing, 1 / (this.#seen + 1));
    this.#mean += w * (cost - this.#mean);
  }
}
