import { fixedWindow } from "./fixed-window.js";
import type { Algorithm } from "./names.js";
import { slidingWindow } from "./sliding-window.js";
import { tokenBucket } from "./token-bucket.js";
import type { RateAlgorithm } from "./types.js";

export type { RateAlgorithm } from "./types.js";
export { fixedWindow, slidingWindow, tokenBucket };

export type RateAlgorithmName = Exclude<Algorithm, "concurrency">;

export const RATE_ALGORITHMS: Readonly<Record<RateAlgorithmName, RateAlgorithm>> = {
  fixed_window: fixedWindow,
  sliding_window: slidingWindow,
  token_bucket: tokenBucket,
};
