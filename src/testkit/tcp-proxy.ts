import net from "node:net";
import { Worker } from "node:worker_threads";

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

/** Passes `from`'s bytes to `to`, `delayMs` late (chunks keep their order: equal delays fire in order). */
function relay(from: net.Socket, to: net.Socket, delayMs: number): void {
  if (delayMs <= 0) {
    from.pipe(to);
    return;
  }
  from.on("data", (chunk) => {
    setTimeout(() => {
      if (!to.destroyed) to.write(chunk);
    }, delayMs);
  });
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
  const pass = (from: net.Socket, to: net.Socket) => relay(from, to, delayMs);
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

export interface ConnectProxy {
  /** http://127.0.0.1:PORT: the proxy to name in a process's `grpc_proxy`. */
  readonly url: string;
  /**
   * The environment that sends a child's gRPC connections (grpc-js, etcd3's too) to every host
   * but `direct` through this proxy: `direct` (e.g. 127.0.0.1) stays a local network, the others
   * (e.g. servers listening on 127.0.0.2) are across the proxy's link.
   */
  env(direct: string): NodeJS.ProcessEnv;
  /** Drops every tunnel and refuses new ones: the process is cut off from the hosts behind it. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

// The CONNECT proxy's thread: tunnels to the host:port each CONNECT names, every chunk `delayMs`
// late each way; messages "cut" (drop every tunnel, refuse new ones), "restore", "close".
const CONNECT_PROXY = `
const { parentPort, workerData } = require("node:worker_threads");
const http = require("node:http");
const net = require("node:net");
const delayMs = workerData.delayMs;
const sockets = new Set();
let open = true;
const relay = (from, to) => {
  if (delayMs <= 0) return void from.pipe(to);
  from.on("data", (chunk) => setTimeout(() => { if (!to.destroyed) to.write(chunk); }, delayMs));
};
const server = http.createServer((_req, res) => res.writeHead(405).end("CONNECT only\\n"));
server.on("connect", (req, down, head) => {
  const target = /^([^:]+):(\\d+)$/.exec(req.url || "");
  if (!open || target === null) {
    down.end("HTTP/1.1 " + (open ? "400 Bad Request" : "503 Service Unavailable") + "\\r\\n\\r\\n");
    return;
  }
  const up = net.connect(Number(target[2]), target[1]);
  sockets.add(down);
  sockets.add(up);
  const drop = () => { down.destroy(); up.destroy(); sockets.delete(down); sockets.delete(up); };
  down.on("error", drop).on("close", drop);
  up.on("error", drop).on("close", drop);
  up.once("connect", () => {
    down.write("HTTP/1.1 200 Connection Established\\r\\n\\r\\n");
    if (head.length > 0) down.unshift(head);
    relay(down, up);
    relay(up, down);
  });
});
server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
parentPort.on("message", (m) => {
  if (m === "restore") open = true;
  else {
    open = false;
    for (const s of sockets) s.destroy();
    sockets.clear();
    if (m === "close") server.close(() => parentPort.close());
  }
});
`;

/**
 * An HTTP CONNECT proxy on loopback (what grpc-js uses when `grpc_proxy` is set) whose tunnels
 * pass every chunk `delayMs` late each way and can be cut: the link from one process (a region's
 * server) to a whole cluster whatever addresses its members advertise, where a plain TCP proxy
 * stands for one address that every client shares. It runs on a thread of its own, so a busy
 * event loop here (a load generator falling behind) does not lengthen the link's delay.
 */
export async function startConnectProxy(opts: { delayMs?: number } = {}): Promise<ConnectProxy> {
  const worker = new Worker(CONNECT_PROXY, { eval: true, workerData: { delayMs: opts.delayMs ?? 0 } });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    env: (direct) => ({ grpc_proxy: url, no_grpc_proxy: direct }),
    cut: () => worker.postMessage("cut"),
    restore: () => worker.postMessage("restore"),
    close: async () => {
      worker.postMessage("close");
      await new Promise((resolve) => worker.once("exit", resolve));
    },
  };
}
