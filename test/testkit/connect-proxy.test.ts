import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type ConnectProxy, startConnectProxy } from "../../src/testkit/tcp-proxy.js";

/** An echo server on loopback. */
async function echoServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.pipe(s);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
  return {
    port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Opens a CONNECT tunnel to 127.0.0.1:`port` through `proxy`; resolves with the socket and the status line. */
function tunnel(proxy: ConnectProxy, port: number): Promise<{ socket: net.Socket; status: string }> {
  const u = new URL(proxy.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname, () => {
      socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    });
    socket.once("error", reject);
    let head = "";
    const onData = (d: Buffer) => {
      head += d.toString();
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      resolve({ socket, status: head.slice(0, head.indexOf("\r\n")) });
    };
    socket.on("data", onData);
    socket.once("close", () => resolve({ socket, status: head.split("\r\n")[0] ?? "" }));
  });
}

/** Writes `text` and resolves with the echo and the ms it took. */
function roundTrip(socket: net.Socket, text: string): Promise<{ echo: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let got = "";
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length < text.length) return;
      socket.off("data", onData);
      resolve({ echo: got, ms: performance.now() - t0 });
    };
    socket.on("data", onData);
    socket.write(text);
  });
}

describe("startConnectProxy", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it("tunnels to the host:port a CONNECT names, each way `delayMs` late", async () => {
    const echo = await echoServer();
    cleanup.push(echo.close);
    const proxy = await startConnectProxy({ delayMs: 30 });
    cleanup.push(proxy.close);
    const t = await tunnel(proxy, echo.port);
    cleanup.push(() => void t.socket.destroy());
    expect(t.status).toBe("HTTP/1.1 200 Connection Established");
    const r = await roundTrip(t.socket, "hello");
    expect(r.echo).toBe("hello");
    // 30 ms there and 30 ms back (timers fire no earlier than asked).
    expect(r.ms).toBeGreaterThanOrEqual(59);
    expect(proxy.env("127.0.0.1")).toEqual({ grpc_proxy: proxy.url, no_grpc_proxy: "127.0.0.1" });
  });

  it("cut drops the tunnels and refuses new ones with 503; restore lets them through again", async () => {
    const echo = await echoServer();
    cleanup.push(echo.close);
    const proxy = await startConnectProxy();
    cleanup.push(proxy.close);
    const t = await tunnel(proxy, echo.port);
    cleanup.push(() => void t.socket.destroy());
    const closed = new Promise<void>((resolve) => t.socket.once("close", () => resolve()));
    proxy.cut();
    await closed;
    // The cut reaches the proxy's thread as a message: a CONNECT after it is refused.
    const refused = await tunnel(proxy, echo.port);
    cleanup.push(() => void refused.socket.destroy());
    expect(refused.status).toBe("HTTP/1.1 503 Service Unavailable");
    proxy.restore();
    const again = await tunnel(proxy, echo.port);
    cleanup.push(() => void again.socket.destroy());
    expect(again.status).toBe("HTTP/1.1 200 Connection Established");
    expect((await roundTrip(again.socket, "back")).echo).toBe("back");
  });
});
