import { varintSize } from "./fast-encode.js";
import type { ItemError } from "./item-errors.js";
import type { KeyPolicy, ReportEntryMsg, ReportRequest, ReportResponse } from "./messages.js";

/**
 * The batched-ingest hot path's codec, written out by hand: the server's decoder of
 * `ReportRequest` and encoder of `ReportResponse` (issue 16). protobufjs's generic code cost more
 * than the counting: its decoder builds each entry through a constructor with prototype defaults,
 * and its encoder records an operation object per field written before the bytes are produced.
 * Here a request is read in one pass straight into plain objects of one shape, and a response is
 * sized first and then written into one buffer. The bytes and the decoded objects are the same
 * as protobufjs's (test/protocol/report-codec.test.ts compares them); a malformed request throws
 * a `ReportDecodeError` naming the field and offset, where protobufjs would throw too, and also
 * where a known field comes with the wrong wire type (which protobufjs would misread).
 */

export class ReportDecodeError extends Error {}

const TWO_32 = 4294967296;

let buf: Buffer;
let pos = 0;
/** The high 32 bits of the last varint read (`varint` returns the low 32 bits). */
let hi = 0;

function fail(what: string): never {
  throw new ReportDecodeError(`${what} at offset ${pos}`);
}

/** A varint of up to 10 bytes: its low 32 bits (unsigned), the high ones in `hi`. */
function varint(end: number): number {
  let lo = 0;
  hi = 0;
  let shift = 0;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) fail("varint runs past the end");
    const b = buf[pos++]!;
    if (shift < 28) lo |= (b & 0x7f) << shift;
    else if (shift === 28) {
      lo |= (b & 0x0f) << 28;
      hi = (b & 0x7f) >>> 4;
    } else hi |= (b & 0x7f) << (shift - 32);
    if (b < 0x80) {
      hi >>>= 0;
      return lo >>> 0;
    }
    shift += 7;
  }
  return fail("varint longer than 10 bytes");
}

/** A uint64 as a number (exact below 2^53, as protobufjs gives it without Long). */
function uint64(end: number): number {
  const lo = varint(end);
  return lo + hi * TWO_32;
}

function length(end: number): number {
  const n = varint(end);
  if (hi !== 0 || n > end - pos) fail(`length ${hi !== 0 ? "over 2^32" : n} runs past the end`);
  return n;
}

function double(end: number): number {
  if (pos + 8 > end) fail("double runs past the end");
  const v = buf.readDoubleLE(pos);
  pos += 8;
  return v;
}

function skip(wire: number, end: number): void {
  switch (wire) {
    case 0:
      varint(end);
      return;
    case 1:
      if (pos + 8 > end) fail("fixed64 runs past the end");
      pos += 8;
      return;
    case 2: {
      const n = length(end); // before reading pos: `pos += length()` would lose what length read
      pos += n;
      return;
    }
    case 5:
      if (pos + 4 > end) fail("fixed32 runs past the end");
      pos += 4;
      return;
    case 3: {
      // A group (proto2): skipped to its end tag, as protobufjs does.
      for (;;) {
        const tag = varint(end);
        const w = tag & 7;
        if (w === 4) return;
        skip(w, end);
      }
    }
    default:
      fail(`invalid wire type ${wire}`);
  }
}

/** A known field's tag must carry its type's wire type. */
function expect(field: number, wire: number, want: number): void {
  if (wire !== want) fail(`field ${field} has wire type ${wire}, expected ${want}`);
}

function entry(end: number): ReportEntryMsg {
  let key = "";
  let keyHandle = 0;
  let admitted = 0;
  let rejected = 0;
  let held = 0;
  let windowAdmitted = 0;
  let refunded = 0;
  while (pos < end) {
    const tag = varint(end);
    const field = tag >>> 3;
    const wire = tag & 7;
    switch (field) {
      case 1: {
        expect(field, wire, 2);
        const n = length(end);
        key = buf.toString("utf8", pos, pos + n);
        pos += n;
        break;
      }
      case 6:
        expect(field, wire, 0);
        keyHandle = varint(end);
        break;
      case 2:
        expect(field, wire, 1);
        admitted = double(end);
        break;
      case 3:
        expect(field, wire, 1);
        rejected = double(end);
        break;
      case 4:
        expect(field, wire, 1);
        held = double(end);
        break;
      case 5:
        expect(field, wire, 1);
        windowAdmitted = double(end);
        break;
      case 10:
        expect(field, wire, 1);
        refunded = double(end);
        break;
      default:
        if (field === 0) fail("field number 0");
        skip(wire, end);
    }
  }
  return { key, keyHandle, admitted, rejected, held, windowAdmitted, refunded };
}

/** A `ReportRequest` from its bytes; throws ReportDecodeError saying what is wrong. */
export function decodeReportRequest(bytes: Buffer): ReportRequest {
  buf = bytes;
  pos = 0;
  const end = bytes.length;
  let clientId = "";
  let seq = 0;
  let generation = 0;
  let intervalMs = 0;
  let keyEpoch = 0;
  let spanMs = 0;
  const entries: ReportEntryMsg[] = [];
  try {
    while (pos < end) {
      const tag = varint(end);
      const field = tag >>> 3;
      const wire = tag & 7;
      switch (field) {
        case 5: {
          expect(field, wire, 2);
          const n = length(end);
          entries.push(entry(pos + n));
          break;
        }
        case 1: {
          expect(field, wire, 2);
          const n = length(end);
          clientId = buf.toString("utf8", pos, pos + n);
          pos += n;
          break;
        }
        case 2:
          expect(field, wire, 0);
          seq = uint64(end);
          break;
        case 3:
          expect(field, wire, 0);
          generation = uint64(end);
          break;
        case 4:
          expect(field, wire, 0);
          intervalMs = varint(end);
          break;
        case 6:
          expect(field, wire, 0);
          keyEpoch = varint(end);
          break;
        case 7:
          expect(field, wire, 0);
          spanMs = varint(end);
          break;
        default:
          if (field === 0) fail("field number 0");
          skip(wire, end);
      }
    }
  } finally {
    buf = EMPTY;
  }
  return { clientId, seq, generation, intervalMs, entries, keyEpoch, spanMs };
}

const EMPTY = Buffer.alloc(0);

// Encoding. Sizes first (each policy's length prefix needs its size), then one buffer written.

/** uint32 as protobufjs writes it (`value >>> 0`). */
function u32Size(v: number): number {
  return varintSize(v >>> 0);
}

/** int32 (enums): a negative value takes ten bytes, sign-extended to 64 bits. */
function i32Size(v: number): number {
  return v < 0 ? 10 : varintSize(v >>> 0);
}

let out: Buffer;
let at = 0;

function writeVarint32(v: number): void {
  while (v > 0x7f) {
    out[at++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  out[at++] = v;
}

function writeVarint64(lo: number, h: number): void {
  while (h !== 0) {
    out[at++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (h << 25)) >>> 0;
    h >>>= 7;
  }
  writeVarint32(lo >>> 0);
}

/** protobufjs's LongBits.fromNumber: low and high words, two's complement when negative. */
let wordHi = 0;
function words(value: number): number {
  if (value === 0) {
    wordHi = 0;
    return 0;
  }
  const sign = value < 0;
  if (sign) value = -value;
  let lo = value >>> 0;
  let h = ((value - lo) / TWO_32) >>> 0;
  if (sign) {
    h = ~h >>> 0;
    lo = ~lo >>> 0;
    if (++lo > 0xffffffff) {
      lo = 0;
      if (++h > 0xffffffff) h = 0;
    }
  }
  wordHi = h;
  return lo;
}

/** The bytes of a uint64's varint (protobufjs's LongBits.length). */
function u64Size(v: number): number {
  const p0 = words(v);
  const p1 = ((p0 >>> 28) | (wordHi << 4)) >>> 0;
  const p2 = wordHi >>> 24;
  if (p2 !== 0) return p2 < 128 ? 9 : 10;
  if (p1 !== 0) return p1 < 16384 ? (p1 < 128 ? 5 : 6) : p1 < 2097152 ? 7 : 8;
  return p0 < 16384 ? (p0 < 128 ? 1 : 2) : p0 < 2097152 ? 3 : 4;
}

function writeU64(v: number): void {
  const lo = words(v);
  writeVarint64(lo, wordHi);
}

function writeI32(v: number): void {
  if (v < 0) writeVarint64(v >>> 0, 0xffffffff);
  else writeVarint32(v >>> 0);
}

const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function writeDouble(v: number): void {
  f64[0] = v;
  const b = f64Bytes;
  if (LITTLE_ENDIAN) {
    out[at] = b[0]!;
    out[at + 1] = b[1]!;
    out[at + 2] = b[2]!;
    out[at + 3] = b[3]!;
    out[at + 4] = b[4]!;
    out[at + 5] = b[5]!;
    out[at + 6] = b[6]!;
    out[at + 7] = b[7]!;
  } else out.writeDoubleLE(v, at);
  at += 8;
}

function writeString(s: string, bytes: number): void {
  writeVarint32(bytes);
  at += out.write(s, at, bytes, "utf8");
}

// Whether protobufjs (8) writes a field: set (an own property, not null) and, proto3, not its
// default (0, and for doubles +0 only: -0 is written; "", false). The own-property test is left
// out: a value that is not an own property is either absent or a protobufjs message's prototype
// default, and a default is not written either way.
function num(v: number | undefined): v is number {
  return v != null && v !== 0;
}
function dbl(v: number | undefined): v is number {
  return v != null && !Object.is(v, 0);
}
function str(v: string | undefined): v is string {
  return v != null && v !== "";
}
function bool(v: boolean | undefined): v is boolean {
  return v != null && v !== false;
}

function itemErrorSize(e: ItemError): number {
  let n = 0;
  if (num(e.code)) n += 1 + i32Size(e.code);
  if (str(e.message)) {
    const b = Buffer.byteLength(e.message);
    n += 1 + varintSize(b) + b;
  }
  return n;
}

function writeItemError(e: ItemError): void {
  if (num(e.code)) {
    out[at++] = 0x08;
    writeI32(e.code);
  }
  if (str(e.message)) {
    out[at++] = 0x12;
    writeString(e.message, Buffer.byteLength(e.message));
  }
}

function policySize(p: KeyPolicy): number {
  let n = 0;
  if (num(p.kind)) n += 1 + i32Size(p.kind);
  if (dbl(p.units)) n += 9;
  if (dbl(p.fraction)) n += 9;
  if (num(p.validMs)) n += 1 + u32Size(p.validMs);
  if (dbl(p.remaining)) n += 9;
  if (dbl(p.limit)) n += 9;
  if (num(p.resetMs)) n += 1 + u32Size(p.resetMs);
  if (p.error != null) {
    const e = itemErrorSize(p.error);
    n += 1 + varintSize(e) + e;
  }
  if (num(p.keyHandle)) n += 1 + u32Size(p.keyHandle);
  if (num(p.gateways)) n += 1 + u32Size(p.gateways);
  if (dbl(p.sharePerS)) n += 9;
  return n;
}

function writePolicy(p: KeyPolicy): void {
  if (num(p.kind)) {
    out[at++] = 0x08;
    writeI32(p.kind);
  }
  if (dbl(p.units)) {
    out[at++] = 0x11;
    writeDouble(p.units);
  }
  if (dbl(p.fraction)) {
    out[at++] = 0x19;
    writeDouble(p.fraction);
  }
  if (num(p.validMs)) {
    out[at++] = 0x20;
    writeVarint32(p.validMs >>> 0);
  }
  if (dbl(p.remaining)) {
    out[at++] = 0x29;
    writeDouble(p.remaining);
  }
  if (dbl(p.limit)) {
    out[at++] = 0x31;
    writeDouble(p.limit);
  }
  if (num(p.resetMs)) {
    out[at++] = 0x38;
    writeVarint32(p.resetMs >>> 0);
  }
  if (p.error != null) {
    out[at++] = 0x42;
    writeVarint32(itemErrorSize(p.error));
    writeItemError(p.error);
  }
  if (num(p.keyHandle)) {
    out[at++] = 0x48;
    writeVarint32(p.keyHandle >>> 0);
  }
  if (num(p.gateways)) {
    out[at++] = 0x50;
    writeVarint32(p.gateways >>> 0);
  }
  if (dbl(p.sharePerS)) {
    out[at++] = 0x59;
    writeDouble(p.sharePerS);
  }
}

/** Each policy's size, between the two passes; grown as needed, never shrunk. */
let sizes = new Uint32Array(1024);

/** A `ReportResponse`'s bytes, the same as protobufjs's encoder writes. */
export function encodeReportResponse(m: ReportResponse): Buffer {
  const policies = m.policies;
  const count = policies != null ? policies.length : 0;
  if (sizes.length < count) sizes = new Uint32Array(Math.max(count, 2 * sizes.length));
  let n = 0;
  if (num(m.generation)) n += 1 + u64Size(m.generation);
  for (let i = 0; i < count; i++) {
    const s = policySize(policies[i]!);
    sizes[i] = s;
    n += 1 + varintSize(s) + s;
  }
  if (bool(m.duplicate)) n += 2;
  if (num(m.keyEpoch)) n += 1 + u32Size(m.keyEpoch);
  const versionBytes = str(m.configVersion) ? Buffer.byteLength(m.configVersion) : -1;
  if (versionBytes >= 0) n += 1 + varintSize(versionBytes) + versionBytes;
  const incarnationBytes = str(m.incarnation) ? Buffer.byteLength(m.incarnation) : -1;
  if (incarnationBytes >= 0) n += 1 + varintSize(incarnationBytes) + incarnationBytes;
  if (bool(m.tooOld)) n += 2;

  const b = Buffer.allocUnsafe(n);
  out = b;
  at = 0;
  if (num(m.generation)) {
    b[at++] = 0x08;
    writeU64(m.generation);
  }
  for (let i = 0; i < count; i++) {
    b[at++] = 0x12;
    writeVarint32(sizes[i]!);
    writePolicy(policies[i]!);
  }
  if (bool(m.duplicate)) {
    b[at++] = 0x18;
    b[at++] = m.duplicate ? 1 : 0;
  }
  if (num(m.keyEpoch)) {
    b[at++] = 0x20;
    writeVarint32(m.keyEpoch >>> 0);
  }
  if (versionBytes >= 0) {
    b[at++] = 0x2a;
    writeString(m.configVersion, versionBytes);
  }
  if (incarnationBytes >= 0) {
    b[at++] = 0x32;
    writeString(m.incarnation, incarnationBytes);
  }
  if (bool(m.tooOld)) {
    b[at++] = 0x38;
    b[at++] = m.tooOld ? 1 : 0;
  }
  out = EMPTY;
  if (at !== n) throw new Error(`ReportResponse encoder wrote ${at} bytes of ${n}`);
  return b;
}
