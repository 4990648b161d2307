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

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
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

/** A Buffer with the gRPC message prefix (not compressed, `len`), the message to be written after it. */
function framed(len: number): Out {
  const buf = Buffer.allocUnsafe(5 + len);
  buf[0] = 0;
  buf.writeUInt32BE(len, 1);
  const out = new Out(buf);
  out.pos = 5;
  return out;
}

/** Bytes of a string as UTF-8 (its length when it is ASCII, which is checked). */
function strBytes(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, "utf8");
  return s.length;
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
  const statuses = res.statuses ?? [];
  const sizes: number[] = new Array(statuses.length);
  const nameBytes: number[] = new Array(statuses.length);
  let len = 0;
  if (res.overallCode != null) {
    if (!wholeU32(res.overallCode)) return undefined;
    len += 1 + varintSize(res.overallCode);
  }
  for (let i = 0; i < statuses.length; i++) {
    const n = statusSize(statuses[i]!, nameBytes, i);
    if (n < 0) return undefined;
    sizes[i] = n;
    len += 1 + varintSize(n) + n;
  }
  const out = framed(len);
  if (res.overallCode != null) {
    out.byte(0x08);
    out.varint(res.overallCode);
  }
  for (let i = 0; i < statuses.length; i++) {
    const s = statuses[i]!;
    out.byte(0x12);
    out.varint(sizes[i]!);
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
  return out.buf;
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
  const results = res.results ?? [];
  const sizes: number[] = new Array(results.length);
  const strs: number[] = new Array(results.length * 3);
  let len = 0;
  if (res.generation != null) {
    if (!wholeU53(res.generation)) return undefined;
    len += 1 + varintSize(res.generation);
  }
  for (let i = 0; i < results.length; i++) {
    const n = resultSize(results[i]!, strs, i);
    if (n < 0) return undefined;
    sizes[i] = n;
    len += 1 + varintSize(n) + n;
  }
  const out = framed(len);
  if (res.generation != null) {
    out.byte(0x08);
    out.varint(res.generation);
  }
  for (let i = 0; i < results.length; i++) {
    const x = results[i]!;
    out.byte(0x12);
    out.varint(sizes[i]!);
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
  return out.buf;
}
