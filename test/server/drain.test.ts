import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureBuilt, killAllCli } from "../../src/testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, writeConfig } from "../../src/testkit/serve.js";

/**
 * SIGTERM in cluster mode drains (slices move away, counters handed over, lease revoked): a
 * repeated signal must not cut it short, and a dead etcd must not stretch it past the deadline
 * (Kubernetes SIGKILLs after its grace period, 30 s by default).
 */

const CONFIG =
  "domain: api\ndescriptors:\n  - key: fw\n    rate_limit: { unit: minute, requests_per_unit: 10 }\n";

let etcd: EtcdProcess;
let n = 0;
beforeAll(async () => {
  ensureBuilt();
  etcd = await startEtcd();
});
afterEach(async () => {
  await killAllCli();
});
afterAll(async () => {
  await etcd?.destroy();
});

/** A lone cluster member: nobody can take its slices, so its drain lasts the whole --drain-timeout. */
async function member(drainTimeoutMs: number): Promise<ServerProcess> {
  const s = await serverProcess({
    id: `drain-${++n}`,
    configPath: writeConfig(CONFIG),
    etcdUrl: etcd.url,
    prefix: `/drain-test-${n}/`,
    cli: "built",
    extraArgs: ["--drain-timeout", String(drainTimeoutMs), "--shutdown-grace", "200"],
  });
  await s.start();
  return s;
}

/**
 * The exit, once stdout is read to its end as well: 'exit' can come before the last lines are read,
 * and the last line is what these tests check.
 */
async function exitedWithOutput(s: ServerProcess) {
  const exit = await s.child!.exited;
  const out = s.child!.child.stdout!;
  if (!out.closed) await new Promise((resolve) => out.once("close", resolve));
  return exit;
}

const draining = (s: ServerProcess) =>
  s.child!.waitForLog("the drain to start", (l) => String(l.msg).startsWith("shutting down: not ready"));

describe("serve: signals during a drain", () => {
  it("a second SIGTERM during the drain is logged and the drain runs to its end: exit 0", async () => {
    const s = await member(1500);
    s.child!.child.kill("SIGTERM");
    await draining(s);
    s.child!.child.kill("SIGTERM");
    expect(await exitedWithOutput(s)).toEqual({ code: 0, signal: null });
    const msgs = s.child!.lines.map((l) => JSON.parse(l).msg as string);
    expect(msgs).toContain("already stopping: SIGTERM ignored, the drain goes on");
    // Usually the lone member's drain lasts to its deadline; sometimes the assigner has already
    // left it nothing to hold. Either way the drain ended on its own terms.
    expect(msgs.some((m) => m === "drain timed out; leaving anyway" || m === "drained")).toBe(true);
    expect(msgs[msgs.length - 1]).toBe("shut down");
  }, 30_000);

  it("a second SIGINT (Ctrl-C twice) stops at once with exit code 130", async () => {
    const s = await member(20_000);
    const t0 = Date.now();
    s.child!.child.kill("SIGINT");
    await draining(s);
    s.child!.child.kill("SIGINT");
    expect(await exitedWithOutput(s)).toEqual({ code: 130, signal: null });
    expect(Date.now() - t0).toBeLessThan(10_000);
    const msgs = s.child!.lines.map((l) => JSON.parse(l).msg as string);
    expect(msgs).toContain("SIGINT while stopping: exiting now without finishing the drain");
  }, 30_000);
});

describe("serve: the drain's deadline", () => {
  it("with etcd paused (a partition: calls hang, not fail) before SIGTERM, it still exits 0 in time", async () => {
    const s = await member(1000);
    // A stopped etcd refuses connections and every call fails at once; a paused one accepts
    // them and never answers, as behind a partition, which is what outlived the grace period.
    const pid = etcd.pid()!;
    process.kill(pid, "SIGSTOP");
    try {
      const t0 = Date.now();
      s.child!.child.kill("SIGTERM");
      const exit = await Promise.race([
        exitedWithOutput(s),
        new Promise((resolve) => setTimeout(() => resolve("still running after 15 s"), 15_000)),
      ]);
      const ms = Date.now() - t0;
      expect(exit, s.child!.output()).toEqual({ code: 0, signal: null });
      // 1 s drain + at most 2 s to leave + 0.2 s for calls in flight, and slack for a busy machine.
      expect(ms).toBeLessThan(6000);
      const msgs = s.child!.lines.map((l) => JSON.parse(l).msg as string);
      expect(msgs[msgs.length - 1]).toBe("shut down");
    } finally {
      process.kill(pid, "SIGCONT");
    }
  }, 40_000);
});
