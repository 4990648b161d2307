/**
 * Priority classes. A request carries one (absent: `normal`); under contention lower classes are
 * rejected first, and a limit may reserve a share of itself for classes at or above one. The
 * config names them; the core decides with their rank (`low` 0 .. `critical` 3).
 */
export type Priority = "low" | "normal" | "high" | "critical";

/** In rank order, lowest first: `PRIORITIES[rank]`. */
export const PRIORITIES: readonly Priority[] = ["low", "normal", "high", "critical"];

export const DEFAULT_PRIORITY: Priority = "normal";

export const PRIORITY_RANK: Readonly<Record<Priority, number>> = { low: 0, normal: 1, high: 2, critical: 3 };

/** `reserve:` of a limit: the fraction of it that classes below each named class may never take. */
export type Reserve = Readonly<Partial<Record<Priority, number>>>;
