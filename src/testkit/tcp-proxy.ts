import net from "node:net";

export interface TcpProxy {
  /** http://127.0.0.1:PORT, to give a client instead of the target's URL. */
  readonly url: string;
  /** 127.0.0.1:PORT, for gRPC clients. */
  readonly address: string;
  /** Drops every connection and refuses new ones: the client is cut off while the target runs on. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/**
 * A loopback TCP proxy to `targetUrl` (http://host:port) that a test can cut, to partition one
 * client from etcd or from a server; with `delayMs`, every chunk is passed on that much later in
 * each direction (a link between regions).
 */
export async function startProxy(targetUrl: string, opts: { delayMs?: number } = {}): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const delayMs = opts.delayMs ?? 0;
  const sockets = new Set<net.Socket>();
  let open = true;
  /** Passes `from`'s bytes to `to`, `delayMs` late (chunks keep their order: equal delays fire in order). */
  const pass = (from: net.Socket, to: net.Socket) => {
    if (delayMs <= 0) {
      from.pipe(to);
      return;
    }
    from.on("data", (chunk) => {
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk);
      }, delayMs);
    });
  };
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
    pass(down, up);
    pass(up, down);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
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
