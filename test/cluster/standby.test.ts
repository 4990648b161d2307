import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { killAllCli } from "../../src/testkit/cli.js";
import { waitFor } from "../../src/testkit/wait.js";
import { type ClusterHarness, startClusterHarness } from "./cluster-harness.js";

/**
 * Design invariant 9 under a crash, for keys decided only synchronously (Check): no gateway keeps
 * their window totals, so without a standby copy the new owner of a SIGKILLed server's slices
 * starts their window at zero (up to twice the limit in that window). With standby copies the
 * buddy holds the key's count, at most one replication interval old, and the new owner starts
 * from it.
 */

const WINDOW_S = 60;
const LIMIT = 1000;
const DRIVEN = 600;
const CONFIG = `
domain: api
descriptors:
  - key: s
    rate_limit: { window: ${WINDOW_S}s, requests_per_unit: ${LIMIT} }
`;

describe("SIGKILL of a sync-only key's owner", () => {
  let h: ClusterHarness;
  beforeAll(async () => {
    h = await startClusterHarness({ servers: 3, config: CONFIG, extraArgs: ["--rebalance-interval", "0"] });
    await h.startAll();
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
    await killAllCli();
  });

  const check = (via: string, key: string, cost: number) => h.check(via, key, cost, 2000);

  /**
   * A key owned by a server other than s1 (through which the calls go, and which survives),
   * driven to DRIVEN of LIMIT, with more than a replication interval after the last call (the
   * buddy holds the latest count). `prefix` keeps the keys of the two tests apart.
   */
  async function drivenKey(prefix: string) {
    const view = await h.view("s1");
    let key = "";
    for (let i = 0; !key; i++)
      if (h.ownerIn(view, `api/s=${prefix}${i}`) !== "s1") key = `api/s=${prefix}${i}`;
    // The window is aligned to the minute: start far enough from its end that the kill and the
    // takeover (a lease TTL and a few seconds) happen inside the window the count was made in.
    const intoWindow = Date.now() % (WINDOW_S * 1000);
    if (intoWindow > (WINDOW_S - 30) * 1000)
      await new Promise((r) => setTimeout(r, WINDOW_S * 1000 - intoWindow + 200));
    let windowEnd = 0;
    let before = -1;
    for (let i = 0; i < DRIVEN / 10; i++) {
      const res = await check("s1", key, 10);
      expect(res.allowed).toBe(true);
      windowEnd = Date.now() + (res.resetMs ?? 0);
      before = res.remaining ?? 0;
    }
    expect(before).toBe(LIMIT - DRIVEN);
    await new Promise((r) => setTimeout(r, 600));
    return { key, owner: h.ownerIn(view, key), windowEnd, before };
  }

  it("the new owner starts the key's window from the standby copy, not from zero", async () => {
    const { key, owner, windowEnd, before } = await drivenKey("k");
    await h.kill(owner, "SIGKILL");
    const t0 = Date.now();
    let remaining = -1;
    let afterEnd = 0;
    await waitFor(
      "the key served by a survivor after the owner's lease expired",
      async () => {
        const v = await h.view("s1").catch(() => undefined);
        if (!v || v.members.some((m) => m.id === owner)) return false;
        try {
          // A cost of 0 is taken as 1 (the Check default): the probe uses one unit.
          const after = await check("s1", key, 1);
          remaining = after.remaining ?? 0;
          afterEnd = Date.now() + (after.resetMs ?? 0);
          return true;
        } catch {
          return false;
        }
      },
      15_000,
      50,
    );
    const newOwner = h.ownerIn(await h.view("s1"), key);
    console.log(
      `standby: ${key} (owner ${owner} SIGKILLed, now ${newOwner}) remaining ${remaining} after the kill ` +
        `(${before} before it, less the probe's 1; ${Date.now() - t0} ms to takeover)`,
    );
    // Same window (else the figure means nothing).
    expect(Math.abs(afterEnd - windowEnd)).toBeLessThan(1000);
    // The takeover lost nothing (no traffic in the last replication interval before the kill).
    expect(remaining).toBe(LIMIT - DRIVEN - 1);
    // And the rest of the window admits only what was left.
    expect((await check("s1", key, remaining)).allowed).toBe(true);
    expect((await check("s1", key, 1)).allowed).toBe(false);
    await h.start(owner);
    await h.settled();
  }, 60_000);

  it("an owner SIGKILLed and restarted before its lease expired starts from its own standby copies", async () => {
    const { key, owner, windowEnd, before } = await drivenKey("r");
    const generation = (await h.view("s1")).generation;
    await h.kill(owner, "SIGKILL");
    // At once: the lease (2 s) outlives the restart, so nothing moves and the new process owns
    // the key again, its counters gone with the old one.
    await h.start(owner);
    const after = await waitForCheck(key);
    const view = await h.view("s1");
    console.log(
      `standby: ${key} (owner ${owner} SIGKILLed and restarted, generation ${generation} -> ${view.generation}, ` +
        `owner now ${h.ownerIn(view, key)}) remaining ${after.remaining} (${before} before the kill, less the probe's 1)`,
    );
    expect(Math.abs(after.end - windowEnd)).toBeLessThan(1000);
    expect(after.remaining).toBe(LIMIT - DRIVEN - 1);
  }, 60_000);

  /** The first successful 1-unit Check of `key` through s1: its remaining and window end. */
  async function waitForCheck(key: string) {
    let out = { remaining: -1, end: 0 };
    await waitFor(
      "the key served again",
      async () => {
        try {
          const r = await check("s1", key, 1);
          out = { remaining: r.remaining ?? 0, end: Date.now() + (r.resetMs ?? 0) };
          return true;
        } catch {
          return false;
        }
      },
      15_000,
      50,
    );
    return out;
  }
});
