import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolShardKey } from "../../src/config/types.js";
import { ErrorCode } from "../../src/protocol/item-errors.js";
import { spawnCli } from "../../src/testkit/cli.js";
import { waitFor } from "../../src/testkit/wait.js";
import { type ClusterHarness, startClusterHarness } from "./cluster-harness.js";

/**
 * Issue 14 with real processes: two `serve --etcd` servers; a backend reports a pool's utilisation
 * to either server (the one that does not own `pool/<name>` forwards it to the owner, as it does a
 * settle); the owner publishes the pool with its load, and `shardlimit status` shows it.
 */

const CONFIG = `domain: api
pools:
  gpu: { target: 0.8, idle_below: 0.6 }
descriptors:
  - key: model
    rate_limit: { algorithm: token_bucket, unit: second, requests_per_unit: 100, pool: gpu }
`;

describe("pools in a cluster", () => {
  let h: ClusterHarness;

  beforeAll(async () => {
    h = await startClusterHarness({ servers: 2, config: CONFIG, extraArgs: ["--load-interval", "200"] });
    await h.startAll();
  }, 60_000);

  afterAll(async () => {
    await h?.stop();
  });

  it("a report to the server that does not own pool/gpu is forwarded to the owner, which keeps it and status shows it", async () => {
    const view = await h.view("s1");
    const owner = h.ownerIn(view, poolShardKey("gpu"));
    const other = h.servers.find((s) => s.id !== owner)!.id;
    const reportOnce = () =>
      h.server(other).rpc.reportPool({
        pool: "gpu",
        backend: "b1",
        utilisation: 1,
        capacity: 100,
        generation: view.generation,
      });
    // A backend reports again on SLICE_NOT_READY (the code table's clientRetries): right after
    // start-up the pool's slice may still be on its way to its owner (a fresh-clone CI run met it).
    let forwarded = await reportOnce();
    await waitFor("the pool's owner to have its slice", async () => {
      if (forwarded.error?.code !== ErrorCode.SLICE_NOT_READY) return true;
      forwarded = await reportOnce();
      return false;
    });
    // The owner's answer (the pool's state), not NOT_OWNER; an unknown pool is refused there too.
    expect(forwarded.error).toBeFalsy();
    expect(forwarded.fractions).toHaveLength(4);
    const unknown = await h.server(other).rpc.reportPool({
      pool: "tpu",
      backend: "b1",
      utilisation: 1,
      capacity: 100,
      generation: view.generation,
    });
    expect(unknown.error?.message).toMatch(/no pool named "tpu"/);
    // The CLI in a child process, awaited: the backend below keeps reporting meanwhile.
    const cli = async (args: string[]) => {
      const c = spawnCli(["status", "--etcd", h.etcd.url, "--prefix", h.prefix, ...args], { cli: "built" });
      await c.exited;
      return c.lines.join("\n");
    };
    const status = async () =>
      JSON.parse(await cli(["--json"])) as {
        pools: { name: string; owner: string; mode: string; backends: number }[];
      };
    // A backend reporting every 100 ms, as backends do (one silent for 1 s drops out), to the
    // server that does not own the pool.
    let lastError: unknown;
    const report = () =>
      h
        .server(other)
        .rpc.reportPool({
          pool: "gpu",
          backend: "b1",
          utilisation: 1,
          capacity: 100,
          generation: view.generation,
        })
        .then((res) => {
          if (res.error) lastError = res.error;
        });
    const backend = setInterval(report, 100);
    try {
      await waitFor(
        "status to show pool gpu overloaded at its owner",
        async () => {
          const p = (await status()).pools.find((x) => x.name === "gpu");
          return p !== undefined && p.mode === "overloaded" && p.owner === owner && p.backends === 1;
        },
        15_000,
        100,
      );
      const table = await cli([]);
      expect(table).toMatch(new RegExp(`gpu\\s+${owner}\\s+overloaded\\s+100%\\s+80%`));
    } finally {
      clearInterval(backend);
    }
    expect(lastError).toBeUndefined();
  }, 30_000);

  it("the owner drains during overload: the pool's state goes with the handoff, the new owner sheds on from its level", async () => {
    const view = await h.view("s1");
    const owner = h.ownerIn(view, poolShardKey("gpu"));
    const other = h.servers.find((s) => s.id !== owner)!.id;
    // A backend at full load reporting through the server that stays; its answers are the owner's.
    const report = () =>
      h
        .server(other)
        .rpc.reportPool({ pool: "gpu", backend: "b2", utilisation: 1, capacity: 100, generation: 0 });
    let before = 0;
    await waitFor(
      "the owner's controller to shed deeply (level below -1)",
      async () => {
        const res = await report();
        if (!res.error) before = res.level ?? 0;
        return before < -1;
      },
      15_000,
      100,
    );
    await h.kill(owner, "SIGTERM"); // drains: pool/gpu moves to the other server with its state
    const res = await report();
    expect(res.error).toBeFalsy();
    // With utilisation held at 1 the level only falls; started afresh it would be near 0.
    expect(res.level).toBeLessThanOrEqual(before);
    expect(res.mode).toBe("overloaded");
    const taken = h
      .server(other)
      .child!.lines.map((l) => JSON.parse(l) as { msg?: string; pools?: string[] })
      .find((l) => l.msg === "handoff: pool state taken over");
    expect(taken?.pools).toEqual(["gpu"]);
  }, 60_000);
});
