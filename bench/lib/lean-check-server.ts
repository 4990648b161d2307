/**
 * One standalone shardlimit server answering `Check` twice: through its grpc-js server as always,
 * and through a bare node:http2 endpoint (hand-framed gRPC, no grpc-js) that calls the same
 * Limiter. Started by bench/transport.ts; prints {"grpc": port, "lean": port} when both listen.
 * The lean endpoint is an experiment: it handles `Check` only and knows no deadlines, metadata or
 * compression.
 */
import http2 from "node:http2";
import { grpcFrame } from "../../src/protocol/fast-encode.js";
import type { CheckRequest } from "../../src/protocol/messages.js";
import { RATE_LIMITER_SERVICE, serviceDefinition } from "../../src/protocol/proto.js";
import { startLoopbackServer } from "../../src/testkit/in-process.js";
import { respondGrpc } from "./respond-grpc.js";

const running = await startLoopbackServer(process.argv[2]!, { logLevel: "warn" });
const check = serviceDefinition(RATE_LIMITER_SERVICE).Check!;
const lean = http2.createServer();
lean.on("stream", (stream) => {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("end", () => {
    const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const req = check.requestDeserialize(buf.subarray(5)) as CheckRequest;
    respondGrpc(stream, grpcFrame(check.responseSerialize(running.limiter.check(req))));
  });
});
lean.listen(0, "127.0.0.1", () => {
  const a = lean.address();
  process.stdout.write(
    `${JSON.stringify({ grpc: running.grpcPort, lean: typeof a === "object" && a ? a.port : 0 })}\n`,
  );
});
process.on("SIGTERM", () => {
  lean.close();
  void running.shutdown().then(() => process.exit(0));
});
