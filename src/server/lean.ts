import { EventEmitter } from "node:events";
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { TLSSocket } from "node:tls";
import type * as grpc from "@grpc/grpc-js";
import type { Clock, Timer } from "../core/clock.js";
import type { MetadataLike, PeerCertificateLike } from "../security/identity.js";

/**
 * The lean transport: gRPC framing over node:http2 directly for the hot unary methods
 * (`ShouldRateLimit`, `Check`, `ReportAndGetPolicy`, `Peer.Forward`), in front of grpc-js on the
 * same port. grpc-js binds the port (so its TLS, with certificates re-read on change, its sessions,
 * keepalive and shutdown all stay as they are); this module takes over the `stream` event of each
 * HTTP/2 server grpc-js made, answers the hot paths itself and hands every other stream to grpc-js
 * unchanged. The handlers are the very ones grpc-js was given (`guarded(traced(unary(...)))` in
 * grpc.ts), called with a call object of their own: the same authorisation, error mapping, spans
 * and request-duration histogram.
 *
 * Supported: identity encoding only (a `grpc-encoding` other than identity is answered
 * UNIMPLEMENTED, a message with the compressed flag set INTERNAL), one request message per call,
 * `grpc-timeout`, cancellation by RST_STREAM, trailers-only error responses. Not supported on the
 * hot paths: compression, response metadata from handlers, channelz per-call counts.
 *
 * It reaches into two private fields of grpc-js's `Server` (1.14): `http2Servers` and `handlers`.
 * `installLean` throws if they are not there, so an upgrade that moves them fails loudly.
 */

/** The four hot methods, by gRPC path. */
export const LEAN_PATHS: readonly string[] = [
  "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
  "/shardlimit.v1.RateLimiter/Check",
  "/shardlimit.v1.RateLimiter/ReportAndGetPolicy",
  "/shardlimit.v1.Peer/Forward",
];

export const TRANSPORTS = ["grpc-js", "lean"] as const;
export type Transport = (typeof TRANSPORTS)[number];
/**
 * `serve --transport`'s default: lean, which carried 1.6-3.4x grpc-js's calls/s on this machine
 * (bench/RESULTS.md section 16); every server test passes on both.
 */
export const DEFAULT_TRANSPORT: Transport = "lean";

/** gRPC status codes used here (numbers as in grpc-js's `status`). */
const INTERNAL = 13;
const UNIMPLEMENTED = 12;
const RESOURCE_EXHAUSTED = 8;
const DEADLINE_EXCEEDED = 4;

interface Handler {
  func: grpc.handleUnaryCall<unknown, unknown>;
  serialize: (m: unknown) => Buffer;
  deserialize: (b: Buffer) => unknown;
  type: string;
}

type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => void;

export interface LeanOptions {
  clock: Clock;
  maxMessageBytes: number;
  /** Paths served lean (default LEAN_PATHS); each must be a unary method grpc-js has a handler for. */
  paths?: readonly string[];
}

/** How many calls the lean transport answered (for tests: proof the lean path was taken). */
export interface LeanStats {
  calls: number;
}

/**
 * Puts the lean transport in front of `server`'s HTTP/2 servers (call after `bindAsync`). Paths in
 * `o.paths` with a registered unary handler are answered here; everything else goes to grpc-js.
 */
export function installLean(server: grpc.Server, o: LeanOptions): LeanStats {
  const internals = server as unknown as {
    http2Servers?: Map<EventEmitter, unknown>;
    handlers?: Map<string, Handler>;
  };
  if (!(internals.http2Servers instanceof Map) || !(internals.handlers instanceof Map)) {
    throw new Error("the lean transport does not know this grpc-js version's Server internals");
  }
  const table = new Map<string, Handler>();
  for (const path of o.paths ?? LEAN_PATHS) {
    const h = internals.handlers.get(path);
    if (h !== undefined && h.type === "unary") table.set(path, h);
  }
  const stats: LeanStats = { calls: 0 };
  for (const h2 of internals.http2Servers.keys()) {
    const inner = h2.listeners("stream") as StreamListener[];
    h2.removeAllListeners("stream");
    h2.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      const h = table.get(headers[":path"] as string);
      if (h === undefined || headers[":method"] !== "POST") {
        for (const l of inner) l.call(h2, stream, headers, ...rest);
        return;
      }
      stats.calls++;
      serveLean(stream, headers, h, o);
    });
  }
  return stats;
}

/** Percent-encodes a grpc-message as gRPC's HTTP/2 spec says: bytes outside 0x20-0x7E, and '%'. */
export function encodeGrpcMessage(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return s;
  let out = "";
  for (const b of Buffer.from(s, "utf8")) {
    out +=
      b < 0x20 || b > 0x7e || b === 0x25
        ? `%${b.toString(16).toUpperCase().padStart(2, "0")}`
        : String.fromCharCode(b);
  }
  return out;
}

const TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** A `grpc-timeout` header in ms; undefined when absent; NaN when malformed (up to 8 digits and a unit). */
export function parseGrpcTimeout(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return Number.NaN;
  return Number(m[1]) * TIMEOUT_UNITS[m[2]!]!;
}

/** Metadata read straight from the request headers (what `callViewOf` and tracing need). */
class HeaderMetadata implements MetadataLike {
  constructor(private readonly headers: IncomingHttpHeaders) {}
  get(key: string): (string | Buffer)[] {
    const v = this.headers[key];
    if (v === undefined || key.startsWith(":")) return [];
    return Array.isArray(v) ? v : [v];
  }
  getMap(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(this.headers))
      if (!k.startsWith(":") && typeof v === "string") out[k] = v;
    return out;
  }
}

/** The call object the handlers see: what grpc.ts, check-waits.ts and spans.ts read of a call. */
class LeanCall extends EventEmitter {
  request: unknown;
  cancelled = false;
  readonly metadata: HeaderMetadata;
  constructor(
    private readonly stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    private readonly deadline: number,
  ) {
    super();
    this.metadata = new HeaderMetadata(headers);
  }
  getDeadline(): number {
    return this.deadline;
  }
  getPeer(): string {
    const s = this.stream.session?.socket;
    return s ? `${s.remoteAddress}:${s.remotePort}` : "unknown";
  }
  /** As grpc-js: the peer certificate only when the TLS socket verified it. */
  getAuthContext(): { sslPeerCertificate?: PeerCertificateLike } {
    const s = this.stream.session?.socket;
    if (!(s instanceof TLSSocket) || !s.authorized) return {};
    const c = s.getPeerCertificate();
    return { sslPeerCertificate: c?.raw ? c : undefined };
  }
}

// Shared by every call: node:http2 copies header objects it is given.
const TRAILERS_OK = { "grpc-status": "0" };
const RESPONSE_HEADERS = { ":status": 200, "content-type": "application/grpc" };
const WAIT_FOR_TRAILERS = { waitForTrailers: true };
const ignore = () => {};
const MAX_TIMER_MS = 2 ** 31 - 1;

function sendOk(this: ServerHttp2Stream): void {
  this.sendTrailers(TRAILERS_OK);
}

/** One call: read the one message, run the handler, answer with the message and trailers. */
function serveLean(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  h: Handler,
  o: LeanOptions,
): void {
  let done = false;
  let timer: Timer | undefined;
  let call: LeanCall | undefined;
  const finishError = (code: number, message: string) => {
    if (done) return;
    done = true;
    timer?.cancel();
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      stream.close();
      return;
    }
    // Trailers-only: status in the one HEADERS frame, with END_STREAM.
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(code),
        "grpc-message": encodeGrpcMessage(message),
      },
      { endStream: true },
    );
  };
  const contentType = headers["content-type"];
  if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) {
    stream.respond({ ":status": 415 }, { endStream: true });
    return;
  }
  const encoding = headers["grpc-encoding"];
  if (encoding !== undefined && encoding !== "identity") {
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(UNIMPLEMENTED),
        "grpc-message": encodeGrpcMessage(`message encoding "${String(encoding)}" is not supported`),
        "grpc-accept-encoding": "identity",
      },
      { endStream: true },
    );
    return;
  }
  const timeoutMs = parseGrpcTimeout(headers["grpc-timeout"] as string | undefined);
  if (timeoutMs !== undefined && Number.isNaN(timeoutMs)) {
    finishError(INTERNAL, `malformed grpc-timeout header "${String(headers["grpc-timeout"])}"`);
    return;
  }
  const deadline = timeoutMs === undefined ? Number.POSITIVE_INFINITY : o.clock.now() + timeoutMs;
  // A Node timer fires at once past 2^31-1 ms (24.8 days): a longer deadline gets no timer.
  if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
    timer = o.clock.after(timeoutMs, () => {
      if (done) return;
      if (call !== undefined) {
        call.cancelled = true;
        call.emit("cancelled", "deadline");
      }
      finishError(DEADLINE_EXCEEDED, "Deadline exceeded");
    });
  }
  // Cancellation: the client reset the stream (or the connection went) before the answer.
  stream.once("close", () => {
    if (done) return;
    done = true;
    timer?.cancel();
    if (call !== undefined) {
      call.cancelled = true;
      call.emit("cancelled", "cancelled");
    }
  });
  stream.on("error", ignore); // a reset stream errors; its close above handles it

  // The message: a 5-byte prefix (compressed flag, 4-byte big-endian length), then its bytes,
  // possibly across several DATA frames. Usually one chunk holds it all and nothing is copied.
  let first: Buffer | undefined;
  let parts: Buffer[] | undefined;
  let received = 0;
  let want = -1;
  stream.on("data", (chunk: Buffer) => {
    if (done) return;
    if (first === undefined) first = chunk;
    else {
      if (parts === undefined) parts = [first];
      parts.push(chunk);
    }
    received += chunk.length;
    if (want < 0 && received >= 5) {
      const head = parts === undefined ? first : Buffer.concat(parts, received);
      if (head[0] !== 0) {
        finishError(
          INTERNAL,
          head[0] === 1
            ? "compressed message received without a message encoding (compression is not supported)"
            : `malformed message prefix (flag ${head[0]})`,
        );
        return;
      }
      const len = head.readUInt32BE(1);
      if (len > o.maxMessageBytes) {
        finishError(RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs. ${o.maxMessageBytes})`);
        return;
      }
      want = 5 + len;
    }
    if (want >= 0 && received > want) {
      finishError(UNIMPLEMENTED, "received a second request message for a unary call");
    }
  });
  stream.on("end", () => {
    if (done) return;
    if (want < 0 || received < want) {
      finishError(
        want < 0 && received === 0 ? UNIMPLEMENTED : INTERNAL,
        want < 0 && received === 0
          ? "received no request message for a unary call"
          : "the request stream ended inside a message",
      );
      return;
    }
    const whole = parts === undefined ? first! : Buffer.concat(parts, received);
    const c = new LeanCall(stream, headers, deadline);
    call = c;
    c.request = h.deserialize(whole.subarray(5, want));
    h.func(c as unknown as grpc.ServerUnaryCall<unknown, unknown>, (err, value) => {
      if (done) return;
      if (err) {
        finishError(err.code ?? INTERNAL, err.details ?? "");
        return;
      }
      let body: Buffer;
      try {
        body = h.serialize(value);
      } catch {
        finishError(INTERNAL, "Failed to serialize response");
        return;
      }
      if (body.length > o.maxMessageBytes) {
        finishError(
          RESOURCE_EXHAUSTED,
          `Sent message larger than max (${body.length} vs. ${o.maxMessageBytes})`,
        );
        return;
      }
      done = true;
      timer?.cancel();
      if (stream.destroyed || stream.closed) return;
      const frame = Buffer.allocUnsafe(5 + body.length);
      frame[0] = 0;
      frame.writeUInt32BE(body.length, 1);
      body.copy(frame, 5);
      stream.respond(RESPONSE_HEADERS, WAIT_FOR_TRAILERS);
      stream.once("wantTrailers", sendOk);
      stream.end(frame);
    });
  });
}
