import type { Logger } from "pino";

/** What the cluster code logs with: a pino logger fits, tests pass a silent one. */
export type Log = Pick<Logger, "debug" | "info" | "warn" | "error">;
