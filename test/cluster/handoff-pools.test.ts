import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Handoff } from "../../src/cluster/handoff.js";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { MIN_LEVEL, type PoolTransfer, poolTransferProblem } from "../../src/core/pool.js";
import { PRIORITY_RANK } from "../../src/core/priority.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import type { HandoffRequest } from "../../src/protocol/messages.js";
import { root } from "../../src/protocol/proto.js";
import type { EnvoyRateLimit } from "../../src/server/envoy.js";
import type { Limiter } from "../../src/server/limiter.js";
import type { Ownership } from "../../src/server/ownership.js";
import { PeerService } from "../../src/server/peer-service.js";
import { PoolDesk } from "../../src/server/pools.js";
import { listStore } from "./handoff-fakes.js";

/**
 * Issue 14: a pool's state goes with its key when the key moves: the new owner keeps the
 * backends' latest reports and the controller's level, integral and fractions, so a move during
 * overload keeps shedding at the same fractions instead of starting from zero. Checked like other
 * handed-over state: a bad one changes nothing.
 */

const CONFIG = compileSources([
  {
    file: "c.yaml",
    text: `domain: inference
pools:
  gpu: { target: 0.8, idle_below: 0.5 }
descriptors:
  - key: model
    rate_limit: { unit: second, requests_per_unit: 1000, pool: gpu }
`,
  },
]);

const log = pino({ level: "silent" });
const m = (id: string): Member => ({ id, address: `${id}:1` });
const members = [m("a"), m("b")];
/** Every point in one slice, owned by `owner`. */
const table = (gen: number, owner: number) =>
  new Assignment(gen, members, Uint32Array.of(0), Uint16Array.of(owner));
const HandoffRequestType = root.lookupType("shardlimit.v1.HandoffRequest");
const ownershipStub = { generation: () => 2, check: () => "own" } as unknown as Ownership;

/** The pool of `desk` as of `now` (stepping it if a step is due). */
const gpu = (desk: PoolDesk, now: number) => desk.snapshots(now).find((p) => p.name === "gpu")!;

/** A's pool overloaded: 4 backends at full load for 2 s, every class offering alike. */
function overloaded(clock: ManualClock): PoolDesk {
  const desk = new PoolDesk(CONFIG, ownershipStub, DEFAULT_INPUT_LIMITS);
  for (let t = 0; t < 2000; t += 50) {
    clock.advance(50);
    for (let b = 0; b < 4; b++)
      desk.report(
        { pool: "gpu", backend: `b${b}`, utilisation: 1, capacity: 250, generation: 0 },
        clock.now(),
      );
    const pool = desk.poolOf({ rule: CONFIG.rules[0]! } as never);
    for (const rank of Object.values(PRIORITY_RANK)) pool?.offer(rank, 25, clock.now());
  }
  return desk;
}

describe("a pool's state in a handoff", () => {
  function move() {
    const clock = new ManualClock(1_000_000);
    const deskA = overloaded(clock);
    const deskB = new PoolDesk(CONFIG, ownershipStub, DEFAULT_INPUT_LIMITS);
    const ownA = new ClusterOwnership({ selfId: "a", clock, handoffTimeoutMs: 3000 });
    const ownB = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    const sent: HandoffRequest[] = [];
    const b = new Handoff({
      selfId: "b",
      store: listStore(),
      ownership: ownB,
      peer: () => ({ handoff: async () => ({ accepted: 0, generation: 2 }) }),
      clock,
      log,
      pools: () => deskB,
    });
    const a = new Handoff({
      selfId: "a",
      store: listStore(),
      ownership: ownA,
      // Over the wire's encoding, as a real Peer.Handoff.
      peer: () => ({
        handoff: async (req: Partial<HandoffRequest>) => {
          sent.push(req as HandoffRequest);
          return b.receive(HandoffRequestType.decode(HandoffRequestType.encode(req).finish()) as never);
        },
      }),
      clock,
      log,
      pools: () => deskA,
    });
    for (const o of [ownA, ownB]) o.update(table(1, 0));
    const before = gpu(deskA, clock.now());
    ownB.update(table(2, 1));
    const change = ownA.update(table(2, 1))!;
    return { clock, deskA, deskB, before, sent, send: () => a.send(change) };
  }

  it("a move during overload keeps the fractions, level and backends at the new owner", async () => {
    const { clock, deskA, deskB, before, sent, send } = move();
    expect(before.mode).toBe("overloaded");
    expect(before.fractions[0]).toBeGreaterThan(0.5); // low sheds
    expect(gpu(deskB, clock.now()).fractions).toEqual([0, 0, 0, 0]);
    await send();
    expect(sent.at(-1)!.pools?.map((p) => p.name)).toEqual(["gpu"]);
    const after = gpu(deskB, clock.now());
    expect(after.mode).toBe("overloaded");
    expect(after.fractions).toEqual(before.fractions);
    expect(after.level).toBe(before.level);
    expect(after.integral).toBe(before.integral);
    expect(after.backends).toBe(4);
    expect(after.capacity).toBe(1000);
    // The old owner forgot it (it no longer publishes the pool).
    expect(gpu(deskA, clock.now()).backends).toBe(0);
    // The backends report on to the new owner: it sheds on from where the old one was.
    clock.advance(50);
    for (let b = 0; b < 4; b++)
      deskB.report(
        { pool: "gpu", backend: `b${b}`, utilisation: 1, capacity: 250, generation: 0 },
        clock.now(),
      );
    const next = gpu(deskB, clock.now());
    expect(next.fractions[0]).toBeGreaterThanOrEqual(before.fractions[0]!);
    expect(next.level).toBeLessThanOrEqual(before.level);
  });

  it("a bad pool state is refused whole by Peer.Handoff, naming the pool, and dropped by the receiver", () => {
    const good: PoolTransfer = {
      name: "gpu",
      backends: [{ id: "b0", utilisation: 0.9, capacity: 100, ageMs: 20 }],
      level: -1,
      integral: -0.8,
      idle: false,
      utilisation: 0.9,
      fractions: [1, 0.2, 0, 0],
      offered: [0.1, 0.1, 0.1, 0.1],
    };
    expect(poolTransferProblem(good)).toBeUndefined();
    const bad: [Partial<PoolTransfer>, RegExp][] = [
      [{ level: Number.NaN }, /level NaN/],
      [{ level: MIN_LEVEL - 1 }, /level -8 is not within/],
      [{ fractions: [1, 2, 0, 0] }, /fractions must be 4 numbers within \[0, 1\]/],
      [{ fractions: [1] }, /fractions must be 4/],
      [{ offered: [0, 0, 0, -1] }, /offered must be 4 finite rates/],
      [{ backends: [{ id: "", utilisation: 0.5, capacity: 1, ageMs: 0 }] }, /backend id must be 1-256/],
      [
        { backends: [{ id: "x", utilisation: 0.5, capacity: Number.POSITIVE_INFINITY, ageMs: 0 }] },
        /capacity/,
      ],
      [{ backends: [{ id: "x", utilisation: 1.5, capacity: 1, ageMs: 0 }] }, /utilisation 1.5/],
      [
        {
          backends: Array.from({ length: 4097 }, (_, i) => ({
            id: `b${i}`,
            utilisation: 0,
            capacity: 1,
            ageMs: 0,
          })),
        },
        /4097 backends/,
      ],
    ];
    for (const [change, why] of bad) expect(poolTransferProblem({ ...good, ...change })).toMatch(why);

    const reached: HandoffRequest[] = [];
    const peer = new PeerService({
      limiter: { config: CONFIG } as Limiter,
      envoy: {} as EnvoyRateLimit,
      ownership: { generation: () => 2 } as unknown as Ownership,
      receiveHandoff: (req) => {
        reached.push(req);
        return { accepted: 0, generation: 2 };
      },
    });
    const req = (pools: PoolTransfer[], done = true): HandoffRequest => ({
      generation: 2,
      from: "a",
      ranges: [{ start: 0, end: 2 ** 32 }],
      counters: [],
      done,
      pools,
    });
    expect(() => peer.handoff(req([{ ...good, fractions: [0.5, Number.NaN, 0, 0] }]))).toThrow(
      new InvalidArgumentError(
        'handoff from "a": pool "gpu": fractions must be 4 numbers within [0, 1]; nothing of the chunk was taken',
      ),
    );
    expect(reached).toEqual([]);
    peer.handoff(req([good]));
    expect(reached).toHaveLength(1);

    // Past Peer.Handoff (a Handoff called directly), the receiver checks it again and drops it.
    const clock = new ManualClock(1_000_000);
    const desk = new PoolDesk(CONFIG, ownershipStub, DEFAULT_INPUT_LIMITS);
    const own = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    own.update(table(1, 0));
    own.update(table(2, 1));
    const b = new Handoff({
      selfId: "b",
      store: listStore(),
      ownership: own,
      peer: () => ({ handoff: async () => ({ accepted: 0, generation: 2 }) }),
      clock,
      log,
      pools: () => desk,
    });
    b.receive(req([{ ...good, level: Number.POSITIVE_INFINITY }], false));
    expect(gpu(desk, clock.now()).level).toBe(0);
    b.receive(req([good]));
    expect(gpu(desk, clock.now()).level).toBe(-1);
    expect(gpu(desk, clock.now()).fractions).toEqual([1, 0.2, 0, 0]);
  });
});
