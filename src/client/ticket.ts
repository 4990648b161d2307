import type { ClientKey } from "./client-key.js";

/**
 * What `GatewayLimiter.reserve` admitted, for `settle` once the real cost is known. Settled once:
 * a second `settle` of the same ticket changes nothing.
 */
export class Ticket {
  #settled = false;

  constructor(
    /** The counter charged; undefined when no limit applies to the key. */
    readonly key: ClientKey | undefined,
    readonly estimate: number,
    /** The start of the window the estimate was counted in, by this gateway's clock. */
    readonly windowAt: number,
    private readonly settleWith?: (ticket: Ticket, actualCost: number) => void,
  ) {}

  /**
   * Settles this ticket with what the request really cost, measured after serving (the same as
   * `limiter.settle(ticket, actualCost)`): the difference is charged or given back, and the cost
   * feeds the key's prediction. Throws InvalidArgumentError for a cost that is not a finite
   * number >= 0; a second call does nothing.
   */
  finish(actualCost: number): void {
    this.settleWith?.(this, actualCost);
  }

  get settled(): boolean {
    return this.#settled;
  }

  /** Marks the ticket settled; false if it already was. */
  markSettled(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    return true;
  }
}
