import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ClusterOwnership } from "../../src/cluster/cluster-ownership.js";
import { Handoff } from "../../src/cluster/handoff.js";
import { compileSources } from "../../src/config/load.js";
import { ManualClock } from "../../src/core/clock.js";
import { InvalidArgumentError, PermissionDeniedError } from "../../src/core/errors.js";
import type { CounterSnapshot } from "../../src/core/transfer.js";
import { Assignment, type Member } from "../../src/keyspace/assignment.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import type { HandoffRequest } from "../../src/protocol/messages.js";
import { parseAuthFile } from "../../src/security/auth-file.js";
import { sha256 } from "../../src/security/identity.js";
import { Access } from "../../src/server/access.js";
import type { EnvoyRateLimit } from "../../src/server/envoy.js";
import type { Limiter } from "../../src/server/limiter.js";
import type { Ownership } from "../../src/server/ownership.js";
import { handoffCounterProblem, PeerService } from "../../src/server/peer-service.js";
import { listStore } from "./handoff-fakes.js";

/**
 * Peer.Handoff is accepted only from the member the receiver gained the range from, for a move
 * still pending, with every counter sound by the receiver's own rules; a forged one changes
 * nothing and says what is wrong. And only members (as themselves) reach the peer service.
 */

const CONFIG = compileSources([
  {
    file: "c.yaml",
    text: `domain: d
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 100, algorithm: sliding_window}
  - key: b
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 20}
`,
  },
]);

/** A sound sliding-window counter of `d/k=...`. */
const good = (key = "d/k=1"): CounterSnapshot => ({
  key,
  shard: key,
  algorithm: "sliding_window",
  tRelMs: -10,
  x: 5,
  y: 7,
  expiresInMs: 60_000,
  leases: [],
  clients: [{ id: "gw", demand: 0.5, held: 0, seenMsAgo: 10 }],
});

describe("a handed-over counter, by the receiver's rules", () => {
  const problem = (c: Partial<CounterSnapshot>) =>
    handoffCounterProblem({ ...good(), ...c }, CONFIG, DEFAULT_INPUT_LIMITS);

  it("is sound as the sender took it", () => {
    expect(problem({})).toBeUndefined();
    expect(
      handoffCounterProblem(
        { ...good("d/b=1"), algorithm: "token_bucket", x: -3, y: 0 },
        CONFIG,
        DEFAULT_INPUT_LIMITS,
      ),
    ).toBeUndefined();
  });

  it("is refused with another algorithm, NaN or Infinity, a future window, negative counts, an overfull bucket, or no rule", () => {
    expect(problem({ algorithm: "fixed_window" })).toBe(
      "its algorithm is fixed_window, but this server's config gives d/k the sliding_window algorithm",
    );
    expect(problem({ x: Number.NaN })).toBe("a number is not finite");
    expect(problem({ y: Number.POSITIVE_INFINITY })).toBe("a number is not finite");
    expect(problem({ tRelMs: 5000 })).toBe("its window start (t) is 5000 ms in the future");
    expect(problem({ x: -1 })).toBe("a count is negative (x -1, y 7)");
    expect(
      handoffCounterProblem(
        { ...good("d/b=1"), algorithm: "token_bucket", x: 1e6 },
        CONFIG,
        DEFAULT_INPUT_LIMITS,
      ),
    ).toBe("its bucket holds 1000000 tokens, over the burst of 20");
    expect(problem({ key: "other/k=1", shard: "other/k=1" })).toBe(
      "no limit of this server's config applies to its key",
    );
    expect(problem({ clients: [{ id: "g", demand: Number.NaN, held: 0, seenMsAgo: 1 }] })).toBe("bad client");
  });

  it("refuses a whole chunk with one forged counter, or 10^5 gateways on one, before anything is taken", () => {
    const reached: HandoffRequest[] = [];
    const peer = new PeerService({
      limiter: { config: CONFIG } as Limiter,
      envoy: {} as EnvoyRateLimit,
      ownership: { generation: () => 3 } as unknown as Ownership,
      receiveHandoff: (req) => {
        reached.push(req);
        return { accepted: req.counters.length, generation: 3 };
      },
    });
    const req = (counters: CounterSnapshot[]): HandoffRequest => ({
      generation: 3,
      from: "a",
      ranges: [],
      counters,
      done: false,
    });
    expect(() => peer.handoff(req([good("d/k=1"), { ...good("d/k=2"), tRelMs: 1e9 }]))).toThrow(
      new InvalidArgumentError(
        'handoff from "a": counter "d/k=2": its window start (t) is 1000000000 ms in the future; nothing of the chunk was taken',
      ),
    );
    const crowd = Array.from({ length: 100_000 }, (_, i) => ({
      id: `g${i}`,
      demand: 1,
      held: 0,
      seenMsAgo: 0,
    }));
    expect(() => peer.handoff(req([{ ...good(), clients: crowd }]))).toThrow(
      /has 100000 clients, over the maximum/,
    );
    expect(reached).toEqual([]);
    expect(peer.handoff(req([good()])).accepted).toBe(1);
  });
});

const log = pino({ level: "silent" });
const m = (id: string): Member => ({ id, address: `${id}:1` });
const HALF = 2 ** 31;
const members = [m("a"), m("b"), m("c")];
const table = (gen: number, owners: number[]) =>
  new Assignment(gen, members, Uint32Array.of(0, HALF), Uint16Array.from(owners));
/** Keys in the lower half (the slice that moves) and in the upper half. */
const keyIn = (low: boolean) => {
  for (let i = 0; ; i++) if (keyPoint(`d/k=${i}`) < HALF === low) return `d/k=${i}`;
};

describe("who may hand a range over", () => {
  /** Server B, which gains the lower half from A in generation 2 and owns the upper half all along. */
  function receiver() {
    const clock = new ManualClock();
    const ownership = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    const put: CounterSnapshot[] = [];
    const b = new Handoff({
      selfId: "b",
      store: listStore([], put),
      ownership,
      peer: () => ({ handoff: async () => ({ accepted: 0, generation: 2 }) }),
      clock,
      log,
    });
    ownership.update(table(1, [0, 1]));
    ownership.update(table(2, [1, 1]));
    const send = (from: string, key: string, done = false) =>
      b.receive({ generation: 2, from, ranges: [{ start: 0, end: HALF }], counters: [good(key)], done });
    return { clock, ownership, put, send };
  }

  it("takes the pending move's counters from its previous owner until its done chunk or the handoff timeout", () => {
    const low = keyIn(true);
    const done = receiver();
    expect(done.send("a", low).accepted).toBe(1);
    expect(done.send("a", low, true).accepted).toBe(1); // done: the move is no longer pending
    expect(() => done.send("a", low)).toThrow(PermissionDeniedError);
    expect(done.put).toHaveLength(2);
    const late = receiver();
    expect(late.send("a", low).accepted).toBe(1);
    late.clock.advance(3000); // the wait is over: served without the rest
    expect(() => late.send("a", low)).toThrow(PermissionDeniedError);
    expect(late.put).toHaveLength(1);
  });

  it("refuses another member, and a range the receiver did not gain, changing nothing", () => {
    const { put, send, ownership } = receiver();
    expect(() => send("c", keyIn(true))).toThrow(
      new PermissionDeniedError(
        `handoff from "c" refused: counter "${keyIn(true)}": point ${keyPoint(keyIn(true))} is in no range this server gained from "c" and waits for (no move of it is pending); nothing of the chunk was taken`,
      ),
    );
    expect(() => send("a", keyIn(false))).toThrow(/is in no range this server gained from "a"/);
    expect(put).toEqual([]);
    expect(ownership.waiting()).toHaveLength(1); // the real move still waits for A
  });
});

describe("a receiver's pending moves, by sender", () => {
  it("take each point only from the member its range is pending from, among many ranges", () => {
    const clock = new ManualClock();
    const o = new ClusterOwnership({ selfId: "b", clock, handoffTimeoutMs: 3000 });
    const Q = 2 ** 30;
    const quarters = (gen: number, owners: number[]) =>
      new Assignment(gen, members, Uint32Array.of(0, Q, 2 * Q, 3 * Q), Uint16Array.from(owners));
    o.update(quarters(1, [0, 2, 0, 1]));
    o.update(quarters(2, [1, 1, 1, 1])); // b gains quarters 0 and 2 from a, 1 from c
    const fromA = o.handoffRefusal("a");
    const fromC = o.handoffRefusal("c");
    expect([fromA(0), fromA(Q - 1), fromA(2 * Q), fromA(3 * Q - 1)]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
    expect(fromA(Q)).toMatch(/no range this server gained from "a"/);
    expect(fromA(3 * Q)).toMatch(/no range/); // b's own all along
    expect(fromC(Q + 5)).toBeUndefined();
    expect(fromC(5)).toMatch(/no range this server gained from "c"/);
    o.handoffDone("a", 2);
    expect(o.handoffRefusal("a")(0)).toMatch(/no move of it is pending/);
    expect(o.handoffRefusal("c")(Q)).toBeUndefined();
  });
});

describe("who may call the peer service", () => {
  const policy = parseAuthFile(
    "auth.yaml",
    `tokens:
  srv-a: ${sha256("ta").toString("hex")}
  gw: ${sha256("tg").toString("hex")}
members: [{identity: srv-a, member_id: a}, {identity: "spiffe://c/server/*"}]
gateways: [{identity: gw, domains: ["*"]}]
`,
  );
  const denied: string[] = [];
  const access = new Access({
    policy: () => policy,
    denied: (method, reason) => denied.push(`${method}/${reason}`),
  });
  const view = (token?: string, san?: string) => ({
    ...(san ? { certificate: { subjectaltname: `URI:${san}` } } : {}),
    metadata: { get: (k: string) => (k === "authorization" && token ? [`Bearer ${token}`] : []) },
  });

  it("refuses gateways and anonymous callers every Peer method, naming method and identity", () => {
    for (const method of ["Forward", "Handoff", "Reclaim", "Replicate", "Standby"]) {
      expect(() => access.admit(method, view("tg"))).toThrow(
        `${method} refused for identity "gw": only cluster members may call the peer service`,
      );
    }
    expect(() => access.admit("Handoff", view())).toThrow(/identity "anonymous"/);
    expect(denied).toContain("Handoff/not_member");
  });

  it("admits members; one mapped to a member id may speak only as it", () => {
    const a = access.admit("Handoff", view("ta"));
    expect(a?.identity.name).toBe("srv-a");
    expect(() => access.memberId("Handoff", a, "a")).not.toThrow();
    expect(() => access.memberId("Handoff", a, "b")).toThrow(
      'Handoff refused for identity "srv-a": it is member "a", not "b"',
    );
    const spiffe = access.admit("Replicate", view(undefined, "spiffe://c/server/x"));
    expect(() => access.memberId("Replicate", spiffe, "anyone")).not.toThrow();
    expect(denied).toContain("Handoff/sender");
  });
});
