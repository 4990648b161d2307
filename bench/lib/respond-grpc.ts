import type { ServerHttp2Stream } from "node:http2";
import { pino } from "pino";
import { type RunningServer, startServer } from "../../src/app/serve.js";

/** A standalone server in this process on free loopback ports, logging warnings only. */
export function startLoopbackServer(configPath: string): Promise<RunningServer> {
  return startServer(
    {
      configPath,
      grpcHost: "127.0.0.1",
      grpcPort: 0,
      httpHost: "127.0.0.1",
      httpPort: 0,
      shutdownGraceMs: 500,
    },
    pino({ level: "warn" }),
  );
}

/** Answers a gRPC call on a bare node:http2 stream: headers, the message, then grpc-status 0. */
export function respondGrpc(stream: ServerHttp2Stream, message: Buffer): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(message);
}
