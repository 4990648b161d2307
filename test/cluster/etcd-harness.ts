import { Etcd3 } from "etcd3";
import { afterAll, beforeAll } from "vitest";
// The etcd process comes from the test kit, which bench/ and `shardlimit bench` use too; the
// per-suite etcd is the cluster tests' own.
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";

// The proxy lives in the test kit now (the global-tier loopback run cuts links with it too).
export { startProxy, type TcpProxy } from "../../src/testkit/tcp-proxy.js";

/**
 * One etcd for the enclosing `describe` block: started before its tests, destroyed after them,
 * with every client made by `client()` closed first.
 */
export function etcdPerSuite(): { etcd(): EtcdProcess; client(hosts?: string): Etcd3 } {
  let etcd: EtcdProcess | undefined;
  const clients: Etcd3[] = [];
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await etcd?.destroy();
  });
  return {
    etcd: () => etcd!,
    client(hosts) {
      const c = new Etcd3({ hosts: hosts ?? etcd!.url });
      clients.push(c);
      return c;
    },
  };
}
