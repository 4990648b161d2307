import { InvalidArgumentError } from "../core/errors.js";
import type { InputLimits } from "../protocol/input-limits.js";

/** Refuses a call with more items than the server takes in one. */
export function checkBatch(limits: InputLimits, what: string, n: number): void {
  if (n > limits.maxBatch) {
    throw new InvalidArgumentError(`${what} has ${n} items, over the maximum of ${limits.maxBatch}`);
  }
}

/** Refuses an empty id (client id, lease id) or one over the maximum length. */
export function checkId(limits: InputLimits, what: string, id: string): void {
  if (id.length === 0) throw new InvalidArgumentError(`${what} is empty`);
  if (id.length > limits.maxIdLength) {
    throw new InvalidArgumentError(`${what} is ${id.length} long, over the maximum of ${limits.maxIdLength}`);
  }
}
