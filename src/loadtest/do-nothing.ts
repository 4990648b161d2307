import { type ChildProcess, spawn } from "node:child_process";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { grpcFrame } from "../protocol/fast-encode.js";
import { rawMethod } from "../testkit/raw-method.js";

/**
 * Do-nothing gRPC servers, the baselines of `shardlimit bench sync-compare`: each answers every
 * call on the paths it is given with one fixed, pre-encoded response (the size of a real one),
 * decoding nothing. `grpc-js`: a grpc-js server with identity codecs; `http2`: node:http2 with the
 * gRPC framing written by hand. Each runs in a process of its own (`startDoNothing`), as the
 * shardlimit servers they are compared with do.
 */

export type DoNothingKind = "grpc-js" | "http2";

/** Starts a do-nothing server on a free loopback port; resolves with its port. */
export async function listenDoNothing(
  kind: DoNothingKind,
  answers: ReadonlyMap<string, Buffer>,
): Promise<{ port: number; close(): void }> {
  if (kind === "grpc-js") {
    const server = new grpc.Server();
    for (const [path, res] of answers) {
      const service: grpc.ServiceDefinition = { call: rawMethod(path) };
      server.addService(service, { call: (_c: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, res) });
    }
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    return { port, close: () => server.forceShutdown() };
  }
  const framed = new Map<string, Buffer>();
  for (const [path, res] of answers) framed.set(path, grpcFrame(res));
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    const res = framed.get(headers[":path"] as string);
    stream.on("data", () => {});
    stream.on("error", () => {});
    stream.on("end", () => {
      // A client that closed its connection with calls in flight: nothing to answer.
      if (stream.destroyed || stream.closed) return;
      if (res === undefined) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", "grpc-status": "12" },
          { endStream: true },
        );
        return;
      }
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const a = server.address();
  return { port: typeof a === "object" && a ? a.port : 0, close: () => server.close() };
}

/** A do-nothing server in a child process; `stop()` ends it. */
export async function startDoNothing(
  kind: DoNothingKind,
  answers: ReadonlyMap<string, Buffer>,
  /** Node's own flags for the child (the benches give it the server's heap options). */
  nodeArgs: readonly string[] = [],
): Promise<{ port: number; child: ChildProcess; stop(): Promise<void> }> {
  const arg = JSON.stringify([...answers].map(([p, b]) => [p, b.toString("base64")]));
  const child = spawn(process.execPath, [...nodeArgs, fileURLToPath(import.meta.url), kind, arg], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once("exit", (code) => reject(new Error(`do-nothing ${kind} server exited with ${code}`)));
  });
  return {
    port,
    child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const kind = process.argv[2] as DoNothingKind;
  const pairs = JSON.parse(process.argv[3] ?? "[]") as [string, string][];
  const s = await listenDoNothing(kind, new Map(pairs.map(([p, b]) => [p, Buffer.from(b, "base64")])));
  process.stdout.write(`${s.port}\n`);
  process.on("SIGTERM", () => {
    s.close();
    process.exit(0);
  });
}
