import net from "node:net";

export interface TcpProxy {
  /** http://HOST:PORT (127.0.0.1 unless asked), to give a client instead of the target's URL. */
  readonly url: string;
  /** HOST:PORT, for gRPC clients. */
  readonly address: string;
  /** Drops every connection and refuses new ones: the client is cut off while the target runs on. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/**
 * A loopback TCP proxy to `targetUrl` (http://host:port) that a test can cut, to partition one
 * client from etcd or from a server; with `delayMs`, every chunk is passed on that much later in
 * each direction (a link between regions). `host`: another loopback address to listen on (e.g.
 * 127.0.0.3), so a client can be told to reach only that address.
 */
export async function startProxy(
  targetUrl: string,
  opts: { delayMs?: number; host?: string } = {},
): Promise<TcpProxy> {
  const host = opts.host ?? "127.0.0.1";
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
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port)),
  );
  return {
    url: `http://${host}:${port}`,
    address: `${host}:${port}`,
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
