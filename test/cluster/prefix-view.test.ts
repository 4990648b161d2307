import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { PrefixView } from "../../src/cluster/prefix-view.js";
import { systemClock } from "../../src/core/clock.js";
import { waitFor } from "../../src/testkit/wait.js";
import { etcdPerSuite, startProxy } from "./etcd-harness.js";

const log = pino({ level: "silent" });

describe("a mirrored etcd prefix", () => {
  const suite = etcdPerSuite();

  it("catches up after etcd compacted away the revision its watch would resume from", async () => {
    const proxy = await startProxy(suite.etcd().url);
    const watching = suite.client(proxy.url);
    const writer = suite.client();
    await writer.put("/pv/a").value("1");
    const view = new PrefixView({
      client: watching,
      prefix: "/pv/",
      clock: systemClock,
      log,
      onChange: () => {},
      retryMs: 100,
    });
    await view.start();
    expect([...view.current]).toEqual([["a", "1"]]);
    const syncs = view.syncs;
    // While the watcher is cut off, history moves on and is compacted: resuming from its last
    // revision is impossible, and the view must list afresh.
    proxy.cut();
    await writer.put("/pv/b").value("2");
    await writer.delete().key("/pv/a");
    for (let i = 0; i < 5; i++) await writer.put("/other").value(String(i));
    const rev = Number((await writer.get("/other").exec()).header.revision);
    await writer.kv.compact({ revision: String(rev), physical: true });
    expect(view.current.get("a")).toBe("1"); // cut off: the last known state stays
    proxy.restore();
    await waitFor(
      "the view to show the compacted changes",
      () => view.current.get("b") === "2" && !view.current.has("a"),
      15_000,
    );
    expect([...view.current]).toEqual([["b", "2"]]);
    expect(view.syncs).toBeGreaterThan(syncs);
    await view.stop();
    await proxy.close();
  });
});
