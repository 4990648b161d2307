import type { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEtcd } from "../../src/cluster/etcd-client.js";
import { EtcdLimitsSource, type LimitsInForce } from "../../src/cluster/limits-source.js";
import { pushLimits, readLimits } from "../../src/cluster/limits-store.js";
import { membersPrefix } from "../../src/cluster/membership.js";
import { compileSources } from "../../src/config/load.js";
import { overridesSource } from "../../src/config/overrides.js";
import { systemClock } from "../../src/core/clock.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { waitFor } from "../../src/testkit/wait.js";

/**
 * The two-phase switch of limits from etcd, one source in this process on a real etcd, the other
 * members written as records: a server that starts while a version is staged answers it, and it
 * switches the version on once every member has answered (a silent lowest-id one holds it until it
 * leaves).
 */

const noLog = { debug() {}, info() {}, warn() {}, error() {} };
const prefix = "/limits-switch/";
const config = (n: number) => [
  {
    file: "api.yaml",
    text: `domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: { unit: second, requests_per_unit: ${n} }\n`,
  },
];
const push = (client: Etcd3, n: number) =>
  pushLimits(client, prefix, {
    digest: compileSources(config(n)).version,
    sources: config(n),
    comment: "",
    at: systemClock.now(),
  });
const record = (id: string, limits: LimitsInForce) =>
  JSON.stringify({ id, address: "127.0.0.1:9", capacity: 1, startedAt: 0, limits });

describe("switching a staged limits version", () => {
  let etcd: EtcdProcess;
  let client: Etcd3;
  beforeAll(async () => {
    etcd = await startEtcd();
    client = connectEtcd([etcd.url]);
  }, 30_000);
  afterAll(async () => {
    client?.close();
    await etcd?.destroy();
  });

  it("a server starting while a version is staged answers it, and switches it on once every member has answered", async () => {
    expect((await push(client, 1)).staged).toBe(false); // nobody registered: in force at once
    const a0 = client.lease(30);
    await a0
      .put(`${membersPrefix(prefix)}a0`)
      .value(record("a0", { version: 1, digest: "d", staging: true }));
    const staged = await push(client, 2);
    expect(staged.staged).toBe(true);

    const swaps: number[] = [];
    const published: LimitsInForce[] = [];
    const b1 = new EtcdLimitsSource({
      client,
      prefix,
      clock: systemClock,
      log: noLog,
      selfId: "b1",
      allowRemoval: false,
      onSwap: (_c, _d, state) => swaps.push(state.version),
      onRefused: () => {},
      onStaged: (state) => published.push(state),
    });
    const b1Lease = client.lease(30);
    try {
      await b1.start();
      expect(b1.inForce?.version).toBe(1);
      expect(b1.inForce?.staged).toEqual({ version: 2 });
      // What its node would publish; a0 never answers (nor, as the lowest id, switches without it).
      await b1Lease.put(`${membersPrefix(prefix)}b1`).value(record("b1", b1.inForce!));
      expect((await readLimits(client, prefix)).head?.version).toBe(1);
      // a0 leaves: b1 has answered itself, the only member left, and switches.
      await a0.revoke();
      await waitFor("b1 to switch version 2 on", () => swaps.includes(2), 10_000);
      const after = await readLimits(client, prefix);
      expect(after.head?.version).toBe(2);
      expect(after.staged).toBeUndefined();
      const served = compileSources([...config(2), overridesSource([])]).version;
      expect(b1.inForce).toEqual({ version: 2, digest: served, staging: true });
    } finally {
      await b1.stop();
      await b1Lease.revoke();
    }
  }, 30_000);

  it("servers of an older version (no staging) are not waited for: with only them registered, a push is in force at once", async () => {
    const old = client.lease(30);
    try {
      await old.put(`${membersPrefix(prefix)}a00`).value(record("a00", { version: 2, digest: "d" }));
      const before = (await readLimits(client, prefix)).head!.version;
      const pushed = await push(client, 3);
      expect(pushed.staged).toBe(false);
      expect((await readLimits(client, prefix)).head?.version).toBe(before + 1);
    } finally {
      await old.revoke();
    }
  }, 30_000);
});
