import type { CheckResponse, CheckResult, EnvoyDescriptorStatus, EnvoyResponse } from "./messages.js";

/**
 * Direct encoders of the two hot answers (ShouldRateLimit's and Check's) into one Buffer that
 * already holds the 5-byte gRPC message prefix: sizes first, then one pass of writes, where
 * protobufjs's writer allocates an operation object per field and copies the result once more
 * into the frame. Each covers the common shape of its answer and returns undefined for anything
 * else (response headers, dynamic metadata, item errors, numbers that are not whole and in range),
 * which the caller then encodes with protobufjs. Fields are written as protobufjs writes them
 * (present when not null or undefined), so both decode alike (test/protocol/fast-encode.test.ts).
 */

const MAX_U32 = 0xffff_ffff;

/**
 * Bytes of a varint holding `v` (whole, 0 to 2^53): a comparison ladder for the common values below
 * 2^28, per-call on every encoder here, in report-codec.ts and in handoff's chunking.
 */
export function varintSize(v: number): number {
  if (v < 0x10000000) return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : 4;
  let n = 5;
  for (v = Math.floor(v / 0x800000000); v > 0; v = Math.floor(v / 128)) n++;
  return n;
}

/** Whole and from 0 to 2^53: written as a varint without loss. */
const wholeU53 = (v: number) => Number.isSafeInteger(v) && v >= 0;
const wholeU32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= MAX_U32;

class Out {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  byte(b: number): void {
    this.buf[this.pos++] = b;
  }
  varint(v: number): void {
    const buf = this.buf;
    while (v >= 0x80) {
      buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    buf[this.pos++] = v;
  }
  double(v: number): void {
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  string(s: string, bytes: number): void {
    this.varint(bytes);
    this.pos += this.buf.write(s, this.pos, bytes, bytes === s.length ? "latin1" : "utf8");
  }
}

/**
 * A Buffer for a gRPC length-prefixed message of `len` bytes, its 5-byte prefix written (flag 0,
 * not compressed; the length, big-endian): the message goes from offset 5.
 */
export function grpcPrefixed(len: number): Buffer {
  const buf = Buffer.allocUnsafe(5 + len);
  buf[0] = 0;
  buf.writeUInt32BE(len, 1);
  return buf;
}

/** `body` as a gRPC length-prefixed message. */
export function grpcFrame(body: Uint8Array): Buffer {
  const frame = grpcPrefixed(body.length);
  frame.set(body, 5);
  return frame;
}

/** A Buffer with the gRPC message prefix (not compressed, `len`), the message to be written after it. */
function framed(len: number): Out {
  const out = new Out(grpcPrefixed(len));
  out.pos = 5;
  return out;
}

/** Bytes of a string as UTF-8 (its length when it is ASCII, which is checked). */
function strBytes(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, "utf8");
  return s.length;
}

/**
 * Reused by every answer (encoding is synchronous): the items' sizes, and what `sizeOf` notes for
 * `write`. Every entry read was written by the same call (sizes for each item; a string's size
 * only for a string present), so what an earlier answer left there is never read.
 */
const SIZES: number[] = [];
const SCRATCH: number[] = [];

/**
 * A message of a varint in field 1 (`head`) and repeated messages in field 2 (`items`), framed.
 * `sizeOf` gives an item's size, -1 when this encoder leaves it to protobufjs, and may note sizes
 * (of strings) in `scratch` for `write`, which writes the item's fields.
 */
function frameHeadAndItems<T>(
  head: number | null | undefined,
  headOk: (v: number) => boolean,
  items: readonly T[],
  sizeOf: (x: T, scratch: number[], i: number) => number,
  write: (out: Out, x: T, scratch: number[], i: number) => void,
): Buffer | undefined {
  const sizes = SIZES;
  const scratch = SCRATCH;
  let len = 0;
  if (head != null) {
    if (!headOk(head)) return undefined;
    len += 1 + varintSize(head);
  }
  for (let i = 0; i < items.length; i++) {
    const n = sizeOf(items[i]!, scratch, i);
    if (n < 0) return undefined;
    sizes[i] = n;
    len += 1 + varintSize(n) + n;
  }
  const out = framed(len);
  if (head != null) {
    out.byte(0x08);
    out.varint(head);
  }
  for (let i = 0; i < items.length; i++) {
    out.byte(0x12);
    out.varint(sizes[i]!);
    write(out, items[i]!, scratch, i);
  }
  return out.buf;
}

// ---- envoy.service.ratelimit.v3.RateLimitResponse

/** Size of one DescriptorStatus, or -1 when it has a field this encoder leaves to protobufjs. */
function statusSize(s: EnvoyDescriptorStatus, nameBytes: number[], i: number): number {
  let n = 0;
  if (s.code != null) {
    if (!wholeU32(s.code)) return -1;
    n += 1 + varintSize(s.code);
  }
  const c = s.currentLimit;
  if (c != null) {
    let m = 0;
    if (c.requestsPerUnit != null) {
      if (!wholeU32(c.requestsPerUnit)) return -1;
      m += 1 + varintSize(c.requestsPerUnit);
    }
    if (c.unit != null) {
      if (!wholeU32(c.unit)) return -1;
      m += 1 + varintSize(c.unit);
    }
    if (c.name != null) {
      const b = strBytes(c.name);
      nameBytes[i] = b;
      m += 1 + varintSize(b) + b;
    }
    n += 1 + varintSize(m) + m;
  }
  if (s.limitRemaining != null) {
    if (!wholeU32(s.limitRemaining)) return -1;
    n += 1 + varintSize(s.limitRemaining);
  }
  const d = s.durationUntilReset;
  if (d != null) {
    let m = 0;
    if (d.seconds != null) {
      if (!wholeU53(d.seconds)) return -1;
      m += 1 + varintSize(d.seconds);
    }
    if (d.nanos != null) {
      if (!wholeU32(d.nanos) || d.nanos > 0x7fff_ffff) return -1;
      m += 1 + varintSize(d.nanos);
    }
    n += 1 + varintSize(m) + m;
  }
  return n;
}

/** ShouldRateLimit's answer, framed; undefined when it has headers, metadata or odd numbers. */
export function frameEnvoyResponse(res: EnvoyResponse): Buffer | undefined {
  const r = res as EnvoyResponse & Record<string, unknown>;
  if (
    (res.responseHeadersToAdd != null && res.responseHeadersToAdd.length > 0) ||
    res.dynamicMetadata != null ||
    r.requestHeadersToAdd != null ||
    r.rawBody != null
  ) {
    return undefined;
  }
  return frameHeadAndItems(res.overallCode, wholeU32, res.statuses ?? [], statusSize, writeStatus);
}

function writeStatus(out: Out, s: EnvoyDescriptorStatus, nameBytes: number[], i: number): void {
  if (s.code != null) {
    out.byte(0x08);
    out.varint(s.code);
  }
  const c = s.currentLimit;
  if (c != null) {
    let m = 0;
    if (c.requestsPerUnit != null) m += 1 + varintSize(c.requestsPerUnit);
    if (c.unit != null) m += 1 + varintSize(c.unit);
    if (c.name != null) m += 1 + varintSize(nameBytes[i]!) + nameBytes[i]!;
    out.byte(0x12);
    out.varint(m);
    if (c.requestsPerUnit != null) {
      out.byte(0x08);
      out.varint(c.requestsPerUnit);
    }
    if (c.unit != null) {
      out.byte(0x10);
      out.varint(c.unit);
    }
    if (c.name != null) {
      out.byte(0x1a);
      out.string(c.name, nameBytes[i]!);
    }
  }
  if (s.limitRemaining != null) {
    out.byte(0x18);
    out.varint(s.limitRemaining);
  }
  const d = s.durationUntilReset;
  if (d != null) {
    let m = 0;
    if (d.seconds != null) m += 1 + varintSize(d.seconds);
    if (d.nanos != null) m += 1 + varintSize(d.nanos);
    out.byte(0x22);
    out.varint(m);
    if (d.seconds != null) {
      out.byte(0x08);
      out.varint(d.seconds);
    }
    if (d.nanos != null) {
      out.byte(0x10);
      out.varint(d.nanos);
    }
  }
}

// ---- shardlimit.v1.CheckResponse

const STRINGS = [
  ["rule", 0x3a],
  ["ticketId", 0x52],
  ["explanation", 0x5a],
] as const;

/** Size of one CheckResult, or -1 when it has a field this encoder leaves to protobufjs. */
function resultSize(x: CheckResult, strs: number[], i: number): number {
  if (x.error != null) return -1;
  let n = 0;
  if (x.allowed != null) n += 2;
  if (x.shadowed != null) n += 2;
  if (x.remaining != null) n += 9;
  if (x.limit != null) n += 9;
  if (x.resetMs != null) {
    if (!wholeU32(x.resetMs)) return -1;
    n += 1 + varintSize(x.resetMs);
  }
  if (x.retryMs != null) {
    if (!wholeU32(x.retryMs)) return -1;
    n += 1 + varintSize(x.retryMs);
  }
  for (let k = 0; k < STRINGS.length; k++) {
    const s = x[STRINGS[k]![0]];
    if (s != null) {
      const b = strBytes(s);
      strs[i * 3 + k] = b;
      n += 1 + varintSize(b) + b;
    }
  }
  return n;
}

/** Check's answer, framed; undefined when an item has an error or odd numbers. */
export function frameCheckResponse(res: CheckResponse): Buffer | undefined {
  return frameHeadAndItems(res.generation, wholeU53, res.results ?? [], resultSize, writeResult);
}

function writeResult(out: Out, x: CheckResult, strs: number[], i: number): void {
  if (x.allowed != null) {
    out.byte(0x08);
    out.byte(x.allowed ? 1 : 0);
  }
  if (x.shadowed != null) {
    out.byte(0x10);
    out.byte(x.shadowed ? 1 : 0);
  }
  if (x.remaining != null) {
    out.byte(0x19);
    out.double(x.remaining);
  }
  if (x.limit != null) {
    out.byte(0x21);
    out.double(x.limit);
  }
  if (x.resetMs != null) {
    out.byte(0x28);
    out.varint(x.resetMs);
  }
  if (x.retryMs != null) {
    out.byte(0x30);
    out.varint(x.retryMs);
  }
  for (let k = 0; k < STRINGS.length; k++) {
    const [field, tag] = STRINGS[k]!;
    const s = x[field];
    if (s != null) {
      out.byte(tag);
      out.string(s, strs[i * 3 + k]!);
    }
  }
}
