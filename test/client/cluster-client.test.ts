import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLimiter } from "../../src/client/create.js";
import type { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { killAllCli } from "../../src/testkit/cli.js";
import { httpGet } from "../../src/testkit/http.js";
import { waitFor } from "../../src/testkit/wait.js";
import { clearWindowSeconds } from "../../src/testkit/window.js";
import { type ClusterHarness, startClusterHarness } from "../cluster/cluster-harness.js";

/**
 * The gateway client against three real `serve --etcd` processes on a real etcd: reports go
 * straight to each key's owner and count exactly; when an owner is SIGKILLed mid-window, the
 * client falls back to its local share, and once the slices move it re-sends its window-to-date
 * totals, so the new owner (which starts empty) does not hand out the window a second time.
 */

/** Clear of a fixed-window boundary while this file runs: it asserts exact counts (see clearWindowSeconds). */
const WINDOW = `${clearWindowSeconds(10 * 60_000)}s`;

const CONFIG = `
domain: api
descriptors:
  - key: m
    rate_limit: { window: ${WINDOW}, requests_per_unit: 1000 }
`;
const KEYS = Array.from({ length: 24 }, (_, i) => `api/m=k${i}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("gateway client on a three-server cluster", () => {
  let h: ClusterHarness;
  let limiter: GatewayLimiter;
  beforeAll(async () => {
    h = await startClusterHarness({ servers: 3, config: CONFIG, extraArgs: ["--rebalance-interval", "0"] });
    await Promise.all(h.servers.map((s) => h.start(s.id)));
    await h.settled();
    limiter = await createLimiter({
      servers: h.servers.map((s) => s.address),
      clientId: "gw-cluster",
      reportIntervalMs: 50,
      reportTimeoutMs: 500,
      viewRefreshMs: 500,
    });
  }, 60_000);
  afterAll(async () => {
    limiter?.close();
    await h?.stop();
    await killAllCli();
  });

  /** Charges 1 through any server (forwarded to the owner) and returns what is left. */
  async function remaining(key: string): Promise<number> {
    const r = await h.server("s1").rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 3000 });
    if (r.results[0]!.error) throw new Error(r.results[0]!.error.message);
    return r.results[0]!.remaining ?? 0;
  }

  it("reports go to each key's owner and count exactly, with no NOT_OWNER on the way", async () => {
    const admitted = new Map<string, number>();
    for (let round = 0; round < 10; round++) {
      for (const k of KEYS) if (limiter.decide(k)) admitted.set(k, (admitted.get(k) ?? 0) + 1);
      await sleep(30);
    }
    await sleep(300); // the last reports
    for (const k of KEYS) expect(await remaining(k)).toBe(1000 - admitted.get(k)! - 1);
    let notOwner = 0;
    for (const s of h.servers) {
      const text = (await httpGet(`http://127.0.0.1:${s.httpPort}/metrics`)).body;
      for (const m of text.matchAll(/shardlimit_item_errors_total\{api="report",code="NOT_OWNER"\} (\d+)/g)) {
        notOwner += Number(m[1]);
      }
    }
    expect(notOwner).toBe(0);
    // The keys are spread over all three owners, so the client reported to each.
    const view = await h.view("s1");
    expect(new Set(KEYS.map((k) => h.ownerIn(view, k))).size).toBe(3);
  });

  it("after SIGKILL of a key's owner mid-window the new owner rebuilds the window from re-sent totals", async () => {
    const key = "api/m=crash";
    // The key's first decision has no policy yet (one unit of allowance); its grant comes with the
    // answer to an early report. Waiting for it keeps the count below about load, not about how
    // fast a loaded machine answers that report.
    let admitted = limiter.decide(key) ? 1 : 0;
    await sleep(200);
    for (let i = 0; i < 20; i++) {
      for (let j = 0; j < 10; j++) if (limiter.decide(key)) admitted++;
      await sleep(20);
    }
    await sleep(200);
    expect(admitted).toBeGreaterThanOrEqual(190);
    const view = await h.view("s1");
    const victim = h.ownerIn(view, key);
    const survivor = h.servers.find((s) => s.id !== victim)!;
    await h.kill(victim, "SIGKILL");
    // Keep deciding through the outage (local fallback share) until the client routes the key to
    // its new owner and that owner has the key again.
    const t0 = Date.now();
    let during = 0;
    await waitFor(
      "the client on a generation without the victim",
      async () => {
        for (let j = 0; j < 5; j++) if (limiter.decide(key)) during++;
        const v = await survivor.rpc.getClusterView({}, { deadlineMs: 1000 });
        return (
          !v.members.some((m) => m.id === victim) &&
          limiter.stats().generation >= v.generation &&
          v.generation > view.generation
        );
      },
      15_000,
      50,
    );
    await sleep(500); // reports to the new owner, with the window totals
    console.log(
      `owner ${victim} SIGKILLed: client on the new generation after ${Date.now() - t0} ms; ${during} admitted meanwhile`,
    );
    const left = await h.server(survivor.id).rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 3000 });
    // Without the re-send the new owner would know only what came after the crash.
    expect(left.results[0]!.remaining).toBe(1000 - admitted - during - 1);
    await h.start(victim);
    await h.settled();
  }, 40_000);
});
