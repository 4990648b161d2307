import type { ServerHttp2Stream } from "node:http2";

/** Answers a gRPC call on a bare node:http2 stream: headers, the message, then grpc-status 0. */
export function respondGrpc(stream: ServerHttp2Stream, message: Buffer): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(message);
}
