import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";

describe("etcd harness (a real etcd process)", () => {
  let etcd: EtcdProcess;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd.destroy();
  });

  it("serves the etcd3 client, and keeps its data across a stop and start", async () => {
    const client = new Etcd3({ hosts: etcd.url });
    try {
      await client.put("/shardlimit/test").value("v1");
      expect(await client.get("/shardlimit/test").string()).toBe("v1");
      await etcd.stop();
      await expect(client.get("/shardlimit/test").string()).rejects.toThrow();
      await etcd.start();
      // The client's circuit breaker opened while etcd was down; it lets calls through again
      // after its half-open delay.
      let value: string | null = null;
      const until = Date.now() + 20_000;
      while (value === null && Date.now() < until) {
        value = await client
          .get("/shardlimit/test")
          .string()
          .catch(() => null);
        if (value === null) await new Promise((r) => setTimeout(r, 200));
      }
      expect(value).toBe("v1");
    } finally {
      client.close();
    }
  });
});
