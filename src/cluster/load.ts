import type { Etcd3 } from "etcd3";
import { z } from "zod";
import type { Clock } from "../core/clock.js";
import type { Assignment } from "../keyspace/assignment.js";
import type { Log } from "./log.js";
import { PrefixView } from "./prefix-view.js";

/** Issue 14: a pool's state as the owner of its key publishes it with its load (for `status`). */
export const PoolStatusSchema = z.object({
  name: z.string(),
  mode: z.enum(["quota", "overloaded", "idle"]),
  target: z.number(),
  utilisation: z.number(),
  level: z.number(),
  /** Rejected fraction per class, `low` first. */
  fractions: z.array(z.number()).length(4),
  backends: z.number().int().nonnegative(),
  capacity: z.number().nonnegative(),
  lending: z.number().nonnegative(),
});
export type PoolStatus = z.infer<typeof PoolStatusSchema>;

/** Issue 14: a region's global keys as the server that divides their shares publishes them (for `status`). */
export const GlobalStatusSchema = z.object({
  region: z.string(),
  link: z.enum(["connecting", "connected", "refused", "unreachable"]),
  linkError: z.string().max(2000).optional(),
  keys: z
    .array(
      z.object({
        key: z.string(),
        sharePerS: z.number(),
        lastSharePerS: z.number(),
        demandPerS: z.number(),
        mode: z.enum(["connected", "last_share", "fallback"]),
        lastContactAgoMs: z.number(),
      }),
    )
    .max(100),
  more: z.number().int().nonnegative(),
  modes: z.object({
    connected: z.number().int().nonnegative(),
    last_share: z.number().int().nonnegative(),
    fallback: z.number().int().nonnegative(),
  }),
});
export type GlobalStatus = z.infer<typeof GlobalStatusSchema>;

/** What a server publishes under `<prefix>load/<id>`: decisions per second by point range. */
export const LoadRecordSchema = z.object({
  id: z.string().min(1),
  generation: z.number().int().nonnegative(),
  /** Wall-clock ms of the measurement's end. */
  at: z.number().nonnegative(),
  ranges: z.array(
    z.tuple([
      z.number().int().min(0),
      z
        .number()
        .int()
        .min(1)
        .max(2 ** 32),
      z.number().nonnegative(),
    ]),
  ),
  /** The pools whose key this server owns and has live backends for. */
  pools: z.array(PoolStatusSchema).optional(),
  /** With --global-tier: its link and the global keys it divides shares of. */
  global: GlobalStatusSchema.optional(),
});
export type LoadRecord = z.infer<typeof LoadRecordSchema>;

export function loadPrefix(prefix: string): string {
  return `${prefix}load/`;
}

/**
 * Per-slice load of `a` from the records: each measured range adds its rate to the slices it
 * overlaps, in proportion to the overlap (ranges were measured on the slices of their own
 * generation, which splits and merges may since have changed).
 */
export function sliceLoads(a: Assignment, records: readonly LoadRecord[]): Float64Array {
  const out = new Float64Array(a.slices);
  for (const r of records) {
    for (const [start, end, rate] of r.ranges) {
      if (!(end > start) || !(rate > 0)) continue;
      for (let i = a.sliceOf(start); i < a.slices && a.starts[i]! < end; i++) {
        const s = Math.max(start, a.starts[i]!);
        const e = Math.min(end, a.starts[i]! + a.width(i));
        if (e > s) out[i]! += (rate * (e - s)) / (end - start);
      }
    }
  }
  return out;
}

/** Every member's latest load record, mirrored from etcd. */
export class LoadView {
  private readonly view: PrefixView;
  private records: LoadRecord[] = [];

  constructor(opts: { client: Etcd3; prefix: string; clock: Clock; log: Log }) {
    this.view = new PrefixView({
      client: opts.client,
      prefix: loadPrefix(opts.prefix),
      clock: opts.clock,
      log: opts.log,
      onChange: (entries) => {
        const out: LoadRecord[] = [];
        for (const value of entries.values()) {
          try {
            const r = LoadRecordSchema.safeParse(JSON.parse(value));
            if (r.success) out.push(r.data);
          } catch {
            // a malformed record is left out; its member simply counts as unmeasured
          }
        }
        this.records = out;
      },
    });
  }

  /** Records measured within `maxAgeMs` of `now` (wall clock). */
  fresh(now: number, maxAgeMs: number): LoadRecord[] {
    return this.records.filter((r) => now - r.at <= maxAgeMs);
  }

  start(): Promise<void> {
    return this.view.start();
  }

  stop(): Promise<void> {
    return this.view.stop();
  }
}
