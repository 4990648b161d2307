import { EventEmitter } from "node:events";
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { TLSSocket } from "node:tls";
import type * as grpc from "@grpc/grpc-js";
import type { Clock, Timer } from "../core/clock.js";
import { frameCheckResponse, frameEnvoyResponse, grpcFrame } from "../protocol/fast-encode.js";
import { frameReportResponse } from "../protocol/report-codec.js";
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

/** A hot method: its grpc-js handler and, for the hot answers, a direct encoder. */
interface LeanMethod {
  h: Handler;
  framer: Framer | undefined;
}

type StreamListener = (
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  flags: unknown,
  raw: unknown,
) => void;

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
  // The framer is found with the handler: a look-up by the request's own :path string (a fresh
  // string every call) costs a hash each time.
  const table = new Map<string, LeanMethod>();
  for (const path of o.paths ?? LEAN_PATHS) {
    const h = internals.handlers.get(path);
    if (h !== undefined && h.type === "unary") table.set(path, { h, framer: FRAMERS[path] });
  }
  const stats: LeanStats = { calls: 0 };
  for (const h2 of internals.http2Servers.keys()) {
    const inner = h2.listeners("stream") as StreamListener[];
    h2.removeAllListeners("stream");
    // node:http2 emits `stream` with these four (a rest parameter would be an array per call).
    h2.on(
      "stream",
      (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: unknown, raw: unknown) => {
        const m = table.get(headers[":path"] as string);
        if (m === undefined || headers[":method"] !== "POST") {
          for (const l of inner) l.call(h2, stream, headers, flags, raw);
          return;
        }
        stats.calls++;
        serveLean(stream, headers, m, o);
      },
    );
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

/**
 * The call object the handlers see (what grpc.ts, check-waits.ts and spans.ts read of a call),
 * which is also the whole state of one lean call: the stream's listeners are shared functions that
 * find it on the stream, so a call allocates this object and no closures. Its `cancelled` event
 * (grpc-js's calls are EventEmitters) is served by an emitter made only when a handler listens
 * (a waiting Check), not one per call.
 */
class LeanCall {
  request: unknown;
  cancelled = false;
  /** Answered, failed or cancelled: nothing more is sent. */
  done = false;
  timer: Timer | undefined = undefined;
  /** The request's bytes so far: the first chunk, then every chunk once there are more. */
  first: Buffer | undefined = undefined;
  parts: Buffer[] | undefined = undefined;
  received = 0;
  /** Prefix and message length, once the prefix is in; -1 before. */
  want = -1;
  /** Whether the handler has been called (cancellation is then told to it). */
  started = false;
  private meta: HeaderMetadata | undefined;
  private emitter: EventEmitter | undefined = undefined;
  constructor(
    readonly stream: ServerHttp2Stream,
    readonly headers: IncomingHttpHeaders,
    readonly h: Handler,
    readonly o: LeanOptions,
    readonly framer: Framer | undefined,
    readonly deadline: number,
  ) {}
  on(event: string, fn: (...args: unknown[]) => void): this {
    this.emitter ??= new EventEmitter();
    this.emitter.on(event, fn);
    return this;
  }
  once(event: string, fn: (...args: unknown[]) => void): this {
    this.emitter ??= new EventEmitter();
    this.emitter.once(event, fn);
    return this;
  }
  removeListener(event: string, fn: (...args: unknown[]) => void): this {
    this.emitter?.removeListener(event, fn);
    return this;
  }
  emit(event: string, ...args: unknown[]): boolean {
    return this.emitter?.emit(event, ...args) ?? false;
  }
  listenerCount(event: string): number {
    return this.emitter?.listenerCount(event) ?? 0;
  }
  get metadata(): HeaderMetadata {
    this.meta ??= new HeaderMetadata(this.headers);
    return this.meta;
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
  /** An error status, trailers-only when nothing was sent yet. */
  finishError(code: number, message: string): void {
    if (this.done) return;
    this.done = true;
    this.timer?.cancel();
    const stream = this.stream;
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
  }
  /** The handler's callback (grpc-js's `sendUnaryData`). */
  readonly answer = (err: Partial<grpc.StatusObject> | null, value?: unknown): void => {
    if (this.done) return;
    if (err) {
      this.finishError(err.code ?? INTERNAL, err.details ?? "");
      return;
    }
    let frame: Buffer;
    try {
      frame = this.framer?.(value) ?? grpcFrame(this.h.serialize(value));
    } catch {
      this.finishError(INTERNAL, "Failed to serialize response");
      return;
    }
    if (frame.length - 5 > this.o.maxMessageBytes) {
      this.finishError(
        RESOURCE_EXHAUSTED,
        `Sent message larger than max (${frame.length - 5} vs. ${this.o.maxMessageBytes})`,
      );
      return;
    }
    this.done = true;
    this.timer?.cancel();
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    stream.respond(RESPONSE_HEADERS, WAIT_FOR_TRAILERS);
    stream.on("wantTrailers", sendOk);
    stream.end(frame);
  };
}

/** Encodes an answer with the gRPC message prefix in one Buffer; undefined leaves it to protobufjs. */
type Framer = (m: unknown) => Buffer | undefined;

/** The hot answers with a direct encoder (src/protocol/fast-encode.ts). */
const FRAMERS: Record<string, Framer> = {
  "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit": frameEnvoyResponse as Framer,
  "/shardlimit.v1.RateLimiter/Check": frameCheckResponse as Framer,
  "/shardlimit.v1.RateLimiter/ReportAndGetPolicy": frameReportResponse as Framer,
};

// Shared by every call: node:http2 copies header objects it is given.
const TRAILERS_OK = { "grpc-status": "0" };
const RESPONSE_HEADERS = { ":status": 200, "content-type": "application/grpc" };
const WAIT_FOR_TRAILERS = { waitForTrailers: true };
const ignore = () => {};
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Where a lean stream keeps its call (until the stream closes). */
const CALL = Symbol("leanCall");
type LeanStream = ServerHttp2Stream & { [CALL]: LeanCall | undefined };

function sendOk(this: ServerHttp2Stream): void {
  this.sendTrailers(TRAILERS_OK);
}

/**
 * The stream closed: cancellation if the client reset it (or the connection went) before the
 * answer, and in every case the call is let go of. node:http2's stream objects outlive their
 * calls until the next full collection (they survive the young generation's collections and are
 * promoted, as in a do-nothing server), and whatever they still point to goes with them: the call,
 * its request and its bytes promoted 0.98 KB a call where a do-nothing server promotes 0.57
 * (`--trace-gc-nvp`, bench/RESULTS.md 16k). Dropped here, the call dies young; its request and
 * bytes are dropped from it too, as a waiting handler or the deadline timer may still hold the call.
 */
function onClose(this: LeanStream): void {
  const c = this[CALL];
  if (c === undefined) return;
  this[CALL] = undefined;
  c.first = undefined;
  c.parts = undefined;
  c.request = undefined;
  if (c.done) return;
  c.done = true;
  c.timer?.cancel();
  if (c.started) {
    c.cancelled = true;
    c.emit("cancelled", "cancelled");
  }
}

/**
 * The message: a 5-byte prefix (compressed flag, 4-byte big-endian length), then its bytes,
 * possibly across several DATA frames. Usually one chunk holds it all and nothing is copied.
 */
function onData(this: LeanStream, chunk: Buffer): void {
  const c = this[CALL];
  if (c === undefined || c.done) return;
  if (c.first === undefined) c.first = chunk;
  else {
    if (c.parts === undefined) c.parts = [c.first];
    c.parts.push(chunk);
  }
  c.received += chunk.length;
  if (c.want < 0 && c.received >= 5) {
    const head = c.parts === undefined ? c.first : Buffer.concat(c.parts, c.received);
    if (head[0] !== 0) {
      c.finishError(
        INTERNAL,
        head[0] === 1
          ? "compressed message received without a message encoding (compression is not supported)"
          : `malformed message prefix (flag ${head[0]})`,
      );
      return;
    }
    const len = head.readUInt32BE(1);
    if (len > c.o.maxMessageBytes) {
      c.finishError(
        RESOURCE_EXHAUSTED,
        `Received message larger than max (${len} vs. ${c.o.maxMessageBytes})`,
      );
      return;
    }
    c.want = 5 + len;
  }
  if (c.want >= 0 && c.received > c.want) {
    c.finishError(UNIMPLEMENTED, "received a second request message for a unary call");
  }
}

function onEnd(this: LeanStream): void {
  const c = this[CALL];
  if (c === undefined || c.done) return;
  if (c.want < 0 || c.received < c.want) {
    const none = c.want < 0 && c.received === 0;
    c.finishError(
      none ? UNIMPLEMENTED : INTERNAL,
      none ? "received no request message for a unary call" : "the request stream ended inside a message",
    );
    return;
  }
  const whole = c.parts === undefined ? c.first! : Buffer.concat(c.parts, c.received);
  c.request = c.h.deserialize(whole.subarray(5, c.want));
  c.started = true;
  c.h.func(c as unknown as grpc.ServerUnaryCall<unknown, unknown>, c.answer);
}

/** One call: read the one message, run the handler, answer with the message and trailers. */
function serveLean(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  m: LeanMethod,
  o: LeanOptions,
): void {
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
  const rawTimeout = headers["grpc-timeout"];
  const timeoutMs = rawTimeout === undefined ? undefined : parseGrpcTimeout(rawTimeout as string);
  const deadline =
    timeoutMs === undefined || Number.isNaN(timeoutMs) ? Number.POSITIVE_INFINITY : o.clock.now() + timeoutMs;
  const c = new LeanCall(stream, headers, m.h, o, m.framer, deadline);
  if (timeoutMs !== undefined && Number.isNaN(timeoutMs)) {
    c.finishError(INTERNAL, `malformed grpc-timeout header "${String(rawTimeout)}"`);
    return;
  }
  // A Node timer fires at once past 2^31-1 ms (24.8 days): a longer deadline gets no timer.
  if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
    c.timer = o.clock.after(timeoutMs, () => {
      if (c.done) return;
      if (c.started) {
        c.cancelled = true;
        c.emit("cancelled", "deadline");
      }
      c.finishError(DEADLINE_EXCEEDED, "Deadline exceeded");
    });
  }
  const s = stream as LeanStream;
  s[CALL] = c;
  stream.on("close", onClose);
  stream.on("error", ignore); // a reset stream errors; its close above handles it
  stream.on("data", onData);
  stream.on("end", onEnd);
}
