import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Engine, type Limit, limitDefaults } from "../../src/core/index.js";

const T0 = 1_700_000_000_000;

/** Arbitrary hit sequences: gaps in ms and costs, some larger than the limit. */
const hits = fc.array(
  fc.record({ gap: fc.integer({ min: 0, max: 400 }), cost: fc.integer({ min: 1, max: 12 }) }),
  {
    minLength: 1,
    maxLength: 300,
  },
);

function admitted(l: Limit, seq: { gap: number; cost: number }[]): { t: number; cost: number }[] {
  const e = new Engine();
  const out: { t: number; cost: number }[] = [];
  let t = T0 + 137;
  for (const h of seq) {
    t += h.gap;
    if (e.check("k", l, h.cost, t).allowed) out.push({ t, cost: h.cost });
  }
  return out;
}

/** Most units admitted in any span [s, s + len) starting at an admission. */
function maxInSpan(adm: { t: number; cost: number }[], len: number): number {
  let best = 0;
  let sum = 0;
  let j = 0;
  for (let i = 0; i < adm.length; i++) {
    sum += adm[i]!.cost;
    while (adm[j]!.t <= adm[i]!.t - len) sum -= adm[j++]!.cost;
    best = Math.max(best, sum);
  }
  return best;
}

const limitArb = fc.record({
  limit: fc.integer({ min: 1, max: 40 }),
  windowMs: fc.constantFrom(100, 250, 1000),
});

describe("no algorithm admits more than it may, for any hit sequence", () => {
  for (const algorithm of ["fixed_window", "sliding_window"] as const) {
    it(`${algorithm}: at most limit per aligned window, at most 2x limit in any window length`, () => {
      fc.assert(
        fc.property(limitArb, hits, ({ limit, windowMs }, seq) => {
          const l = limitDefaults({ algorithm, limit, windowMs });
          const adm = admitted(l, seq);
          const perWindow = new Map<number, number>();
          for (const a of adm) {
            const w = a.t - (a.t % windowMs);
            perWindow.set(w, (perWindow.get(w) ?? 0) + a.cost);
          }
          for (const n of perWindow.values()) expect(n).toBeLessThanOrEqual(limit);
          expect(maxInSpan(adm, windowMs)).toBeLessThanOrEqual(2 * limit);
        }),
        { numRuns: 300 },
      );
    });
  }

  it("token bucket: at most burst + limit in any window, at most burst + rate x d in any span d", () => {
    fc.assert(
      fc.property(limitArb, fc.integer({ min: 1, max: 40 }), hits, ({ limit, windowMs }, burst, seq) => {
        const l = limitDefaults({ algorithm: "token_bucket", limit, windowMs, burst });
        const adm = admitted(l, seq);
        expect(maxInSpan(adm, windowMs)).toBeLessThanOrEqual(burst + limit + 1e-9);
        for (const d of [1, 50, 333]) {
          expect(maxInSpan(adm, d)).toBeLessThanOrEqual(burst + (limit * d) / windowMs + 1e-9);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("token bucket with settled overages: debt is repaid, so the long-run total stays within burst + rate x time", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            gap: fc.integer({ min: 0, max: 300 }),
            est: fc.integer({ min: 1, max: 5 }),
            extra: fc.integer({ min: -3, max: 8 }),
          }),
          {
            minLength: 1,
            maxLength: 200,
          },
        ),
        (seq) => {
          const l = limitDefaults({ algorithm: "token_bucket", limit: 20, burst: 10, windowMs: 1000 });
          const e = new Engine();
          let t = T0;
          let charged = 0;
          let maxCost = 0;
          for (const s of seq) {
            t += s.gap;
            if (e.check("k", l, s.est, t).allowed) {
              const actual = Math.max(0, s.est + s.extra);
              e.adjust("k", l, actual - s.est, t);
              charged += actual;
              maxCost = Math.max(maxCost, actual);
            }
          }
          // Each admission needed the estimate in the bucket; overage beyond it is debt repaid
          // before the next admission, so only the last settlement can stand unpaid.
          expect(charged).toBeLessThanOrEqual(10 + ((t - T0) * 20) / 1000 + maxCost + 1e-9);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("concurrency: never more held than the limit", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10 }),
        fc.array(
          fc.record({
            op: fc.constantFrom("acq", "rel"),
            id: fc.integer({ min: 0, max: 15 }),
            amount: fc.integer({ min: 1, max: 3 }),
            gap: fc.integer({ min: 0, max: 2000 }),
          }),
          {
            maxLength: 200,
          },
        ),
        (limit, ops) => {
          const l = limitDefaults({ algorithm: "concurrency", limit, leaseTimeoutMs: 3000 });
          const e = new Engine();
          let t = T0;
          const held = new Map<string, { amount: number; until: number }>();
          for (const o of ops) {
            t += o.gap;
            for (const [id, h] of held) if (h.until <= t) held.delete(id);
            const id = `l${o.id}`;
            if (o.op === "acq") {
              const renewal = held.has(id);
              if (e.acquire("k", l, id, o.amount, t).allowed) {
                held.set(id, { amount: renewal ? held.get(id)!.amount : o.amount, until: t + 3000 });
              }
            } else if (e.release("k", id, t)) held.delete(id);
            let total = 0;
            for (const h of held.values()) total += h.amount;
            expect(total).toBeLessThanOrEqual(limit);
            expect(e.peek("k", l, t).remaining).toBe(limit - total);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("sweeping idle counters never changes a decision (nothing is dropped while it still counts)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("fixed_window", "sliding_window", "token_bucket"),
        limitArb,
        fc.array(
          fc.record({
            gap: fc.integer({ min: 0, max: 700 }),
            cost: fc.integer({ min: 1, max: 8 }),
            sweep: fc.boolean(),
          }),
          {
            maxLength: 200,
          },
        ),
        (algorithm, { limit, windowMs }, seq) => {
          const l = limitDefaults({ algorithm, limit, windowMs });
          const swept = new Engine();
          const kept = new Engine();
          let t = T0 + 3;
          for (const s of seq) {
            t += s.gap;
            if (s.sweep) swept.sweep(t);
            const a = swept.check("k", l, s.cost, t);
            const b = kept.check("k", l, s.cost, t);
            expect(a.allowed).toBe(b.allowed);
            expect(a.remaining).toBe(b.remaining);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
