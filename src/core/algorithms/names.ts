/** The algorithms a limit can use. The config names them; the core implements them. */
export type Algorithm = "fixed_window" | "sliding_window" | "token_bucket" | "concurrency";
export const ALGORITHMS: readonly Algorithm[] = [
  "fixed_window",
  "sliding_window",
  "token_bucket",
  "concurrency",
];
