import net from "node:net";
import tls from "node:tls";
import { grpcFrame } from "../protocol/fast-encode.js";
/** What the load loops need of a client: send request bytes, get response bytes back. */
export interface Caller {
  ready(): Promise<void>;
  call(
    method: string,
    body: Buffer,
    done: (err: { code: number; details: string } | null, res?: Buffer) => void,
  ): void;
  callAsync(method: string, body: Buffer): Promise<Buffer>;
  close(): void;
}

/**
 * A minimal gRPC-over-HTTP/2 client for load generation: one TCP connection, hand-written frames,
 * a fixed HPACK header block per method (literals, no dynamic table), responses not HPACK-decoded.
 * A call succeeds when its stream carries a message before END_STREAM; a trailers-only answer (how
 * gRPC reports an error status) counts as an error. It costs a few microseconds per call where
 * grpc-js's client costs well over a hundred, so on a 2-CPU machine the generator is not what
 * limits the server. Used only by load generation (`bench/`, and `shardlimit bench`'s sync workloads);
 * correctness of answers is checked separately with decoded responses.
 */

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const ACK = 0x1;
const PADDED = 0x8;
const MAX_WINDOW = 0x7fff_ffff;

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(9 + payload.length);
  b.writeUIntBE(payload.length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(stream & MAX_WINDOW, 5);
  payload.copy(b, 9);
  return b;
}

/** HPACK string literal, no Huffman; lengths up to 126. */
function str(s: string): Buffer {
  const v = Buffer.from(s, "latin1");
  if (v.length > 126) throw new RangeError("header value too long for this encoder");
  return Buffer.concat([Buffer.from([v.length]), v]);
}

/** Request headers for a gRPC call to `path`, as literals without indexing. */
function headerBlock(authority: string, path: string, secure: boolean): Buffer {
  return Buffer.concat([
    // :method POST, :scheme http or https (static table 3, and 6 or 7)
    Buffer.from([0x83, secure ? 0x87 : 0x86]),
    Buffer.from([0x04]), // :path, literal without indexing, name = static 4
    str(path),
    Buffer.from([0x01]), // :authority (static 1)
    str(authority),
    Buffer.from([0x0f, 0x10]), // content-type (static 31)
    str("application/grpc"),
    Buffer.from([0x00]), // te: new name
    str("te"),
    str("trailers"),
  ]);
}

type Done = (err: { code: number; details: string } | null, res?: Buffer) => void;

interface Pending {
  done: Done;
  chunks: Buffer[];
  bytes: number;
}

export class H2Client implements Caller {
  private readonly socket: net.Socket;
  private readonly blocks = new Map<string, Buffer>();
  private readonly pending = new Map<number, Pending>();
  private readonly queued: { stream: number; headers: Buffer; body: Buffer }[] = [];
  private nextStream = 1;
  private inbuf: Buffer = Buffer.alloc(0);
  private sendWindow = 65_535;
  private streamWindow = 65_535;
  private maxFrame = 16_384;
  private received = 0;
  private out: Buffer[] = [];
  private flushScheduled = false;
  private readonly connected: Promise<void>;
  private closed = false;

  /** `secure`: over TLS with these options (CA, client certificate, server name), ALPN h2. */
  constructor(
    private readonly address: string,
    private readonly secure?: tls.ConnectionOptions,
  ) {
    const [host, port] = address.split(":") as [string, string];
    this.socket = secure
      ? tls.connect({ ...secure, host, port: Number(port), ALPNProtocols: ["h2"] }).setNoDelay(true)
      : net.connect({ host, port: Number(port), noDelay: true });
    this.connected = new Promise((resolve, reject) => {
      this.socket.once(secure ? "secureConnect" : "connect", () => resolve());
      this.socket.once("error", reject);
    });
    this.socket.on("data", (d: Buffer) => this.onData(d));
    this.socket.on("error", (err) => this.failAll(`socket error: ${err.message}`));
    this.socket.on("close", () => this.failAll("connection closed"));
    // Our receive windows as large as HTTP/2 allows, so the server never waits on us.
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(0x4, 0); // SETTINGS_INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(MAX_WINDOW, 2);
    const wu = Buffer.alloc(4);
    wu.writeUInt32BE(MAX_WINDOW - 65_535, 0);
    this.socket.write(
      Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, settings), frame(WINDOW_UPDATE, 0, 0, wu)]),
    );
  }

  async ready(): Promise<void> {
    await this.connected;
  }

  call(method: string, body: Buffer, done: Done): void {
    let headers = this.blocks.get(method);
    if (headers === undefined) {
      headers = headerBlock(this.address, method, this.secure !== undefined);
      this.blocks.set(method, headers);
    }
    const stream = this.nextStream;
    this.nextStream += 2;
    this.pending.set(stream, { done, chunks: [], bytes: 0 });
    if (this.queued.length > 0 || !this.trySend(stream, headers, body)) {
      this.queued.push({ stream, headers, body });
    }
  }

  callAsync(method: string, body: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      this.call(method, body, (err, res) =>
        err ? reject(new Error(`${err.code} ${err.details}`)) : resolve(res!),
      ),
    );
  }

  close(): void {
    this.closed = true;
    this.socket.end();
    this.socket.destroy();
  }

  /** Writes HEADERS and DATA (the gRPC message: flag, length, bytes) if the windows allow it. */
  private trySend(stream: number, headers: Buffer, body: Buffer): boolean {
    const len = body.length + 5;
    if (len > this.sendWindow || len > this.streamWindow) return false;
    this.sendWindow -= len;
    const msg = grpcFrame(body);
    this.push(frame(HEADERS, END_HEADERS, stream, headers));
    for (let off = 0; off < len; off += this.maxFrame) {
      const end = Math.min(len, off + this.maxFrame);
      this.push(frame(DATA, end === len ? END_STREAM : 0, stream, msg.subarray(off, end)));
    }
    return true;
  }

  private push(b: Buffer): void {
    this.out.push(b);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Everything sent in this turn of the event loop leaves in one write.
      queueMicrotask(() => {
        this.flushScheduled = false;
        const bufs = this.out;
        this.out = [];
        if (!this.closed) this.socket.write(bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs));
      });
    }
  }

  private drainQueue(): void {
    while (this.queued.length > 0) {
      const q = this.queued[0]!;
      if (!this.trySend(q.stream, q.headers, q.body)) return;
      this.queued.shift();
    }
  }

  private onData(d: Buffer): void {
    let buf = this.inbuf.length > 0 ? Buffer.concat([this.inbuf, d]) : d;
    let off = 0;
    while (buf.length - off >= 9) {
      const len = buf.readUIntBE(off, 3);
      if (buf.length - off < 9 + len) break;
      const type = buf[off + 3]!;
      const flags = buf[off + 4]!;
      const stream = buf.readUInt32BE(off + 5) & MAX_WINDOW;
      this.onFrame(type, flags, stream, buf.subarray(off + 9, off + 9 + len));
      off += 9 + len;
    }
    buf = buf.subarray(off);
    this.inbuf = buf.length > 0 ? Buffer.from(buf) : Buffer.alloc(0);
  }

  private onFrame(type: number, flags: number, stream: number, p: Buffer): void {
    switch (type) {
      case DATA: {
        this.received += p.length;
        if (this.received > 1 << 30) {
          const wu = Buffer.alloc(4);
          wu.writeUInt32BE(this.received, 0);
          this.push(frame(WINDOW_UPDATE, 0, 0, wu));
          this.received = 0;
        }
        const call = this.pending.get(stream);
        if (call) {
          let data = p;
          if (flags & PADDED) data = p.subarray(1, p.length - p[0]!);
          call.chunks.push(Buffer.from(data));
          call.bytes += data.length;
        }
        if (flags & END_STREAM) this.finish(stream);
        break;
      }
      case HEADERS:
        if (flags & END_STREAM) this.finish(stream);
        else if (!(flags & END_HEADERS)) throw new Error("h2-client: CONTINUATION frames are not supported");
        break;
      case RST_STREAM:
        this.finish(stream, `stream reset, code ${p.readUInt32BE(0)}`);
        break;
      case SETTINGS:
        if (flags & ACK) break;
        for (let i = 0; i + 6 <= p.length; i += 6) {
          const id = p.readUInt16BE(i);
          const v = p.readUInt32BE(i + 2);
          if (id === 0x4) this.streamWindow = v;
          if (id === 0x5) this.maxFrame = v;
        }
        this.push(frame(SETTINGS, ACK, 0, Buffer.alloc(0)));
        this.drainQueue();
        break;
      case PING:
        if (!(flags & ACK)) this.push(frame(PING, ACK, 0, Buffer.from(p)));
        break;
      case WINDOW_UPDATE:
        if (stream === 0) {
          this.sendWindow += p.readUInt32BE(0) & MAX_WINDOW;
          this.drainQueue();
        }
        break;
      case GOAWAY:
        this.failAll(`GOAWAY, code ${p.readUInt32BE(4)}`);
        break;
    }
  }

  private finish(stream: number, error?: string): void {
    const call = this.pending.get(stream);
    if (!call) return;
    this.pending.delete(stream);
    if (error !== undefined) {
      call.done({ code: 14, details: error });
      return;
    }
    if (call.bytes < 5) {
      call.done({ code: 2, details: "trailers-only answer (an error status)" });
      return;
    }
    const all = call.chunks.length === 1 ? call.chunks[0]! : Buffer.concat(call.chunks);
    call.done(null, all.subarray(5));
  }

  private failAll(reason: string): void {
    if (this.closed) return;
    for (const [stream, call] of this.pending) {
      this.pending.delete(stream);
      call.done({ code: 14, details: reason });
    }
  }
}
