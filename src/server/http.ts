import http from "node:http";
import type { Registry } from "prom-client";
import type { InspectEndpoint } from "./inspect.js";

export interface HttpDeps {
  registry: Registry;
  /** Whether the server should receive traffic (config loaded, serving, not draining). */
  ready: () => boolean;
  /** Lines `/readyz` adds after its verdict (e.g. the limits in force); none when absent. */
  detail?: () => string | undefined;
  /** `/inspect?key=...` (operator-only: wrap it in the access check); absent: 404. */
  inspect?: InspectEndpoint;
  /** Where errors that do not stop the server are reported (pino's shape); unreported when absent. */
  log?: {
    warn(obj: object, msg: string): void;
    debug(obj: object, msg: string): void;
  };
}

/** `/metrics` for Prometheus, `/healthz` (the process is alive) and `/readyz` (send traffic). */
export function startHttp(
  deps: HttpDeps,
  host: string,
  port: number,
): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    const [url, query] = (req.url ?? "/").split("?");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (url === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (url === "/readyz") {
      const ok = deps.ready();
      const detail = deps.detail?.();
      res
        .writeHead(ok ? 200 : 503, { "content-type": "text/plain" })
        .end(`${ok ? "ready" : "not ready"}\n${detail ? `${detail}\n` : ""}`);
    } else if (url === "/inspect" && deps.inspect !== undefined) {
      const a = deps.inspect(new URLSearchParams(query ?? ""));
      res.writeHead(a.status, { "content-type": a.contentType }).end(a.body);
    } else if (url === "/metrics") {
      deps.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": deps.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${err.message}\n`),
      );
    } else {
      res
        .writeHead(404, { "content-type": "text/plain" })
        .end("not found: try /metrics, /healthz, /readyz\n");
    }
  });
  // A bad request (malformed, oversized headers, a reset mid-request) concerns one connection:
  // answer 400 when the socket can still take it, and drop the socket.
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    deps.log?.debug({ err: err.message, code: err.code }, "bad HTTP request");
    if (socket.writable && err.code !== "ECONNRESET") {
      socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    }
    socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      // Errors before listening (port in use) fail the start; after it, an 'error' event (EMFILE
      // when accept() runs out of descriptors, and the like) would be unhandled and kill the
      // whole process, gRPC included. The listening socket survives such errors, so log and go on.
      server.off("error", reject);
      server.on("error", (err: NodeJS.ErrnoException) => {
        deps.log?.warn({ err: err.message, code: err.code }, "HTTP server error; still serving");
      });
      const addr = server.address();
      resolve({ server, port: typeof addr === "object" && addr ? addr.port : port });
    });
  });
}
