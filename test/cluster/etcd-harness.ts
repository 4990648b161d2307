import net from "node:net";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll } from "vitest";
// The etcd process comes from the test kit, which bench/ and `shardlimit bench` use too; the
// proxy and the per-suite etcd are the cluster tests' own.
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";

export interface TcpProxy {
  /** http://127.0.0.1:PORT, to give a client instead of the etcd URL. */
  readonly url: string;
  /** Drops every connection and refuses new ones: the client is cut off while etcd runs on. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** A loopback TCP proxy to `targetUrl` that a test can cut, to partition one client from etcd. */
export async function startProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let open = true;
  const server = net.createServer((down) => {
    if (!open) {
      down.destroy();
      return;
    }
    const up = net.connect(Number(target.port), target.hostname);
    sockets.add(down);
    sockets.add(up);
    const drop = () => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on("error", drop).on("close", drop);
    up.on("error", drop).on("close", drop);
    down.pipe(up);
    up.pipe(down);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

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
