import { grpcPrefixed, varintSize } from "./fast-encode.js";
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
/** `buf` as a DataView: a double is one load. */
let view: DataView;
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
  const v = view.getFloat64(pos, true);
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

/**
 * Numbers per entry in `DecodedReport.numbers`, and where each sits: the key handle and the five
 * amounts, in one array of doubles per request rather than an object (and boxed doubles) per entry.
 */
export const ENTRY_NUMBERS = 6;
export const AT_HANDLE = 0;
export const AT_ADMITTED = 1;
export const AT_REJECTED = 2;
export const AT_HELD = 3;
export const AT_WINDOW_ADMITTED = 4;
export const AT_REFUNDED = 5;

/**
 * A `ReportRequest` as the server's decoder gives it: the entries as columns (`keys`, `numbers`),
 * which the Limiter reads straight, and as objects only when something asks for `entries` (made
 * once, on first read: authorisation, tracing, tests).
 */
export class DecodedReport implements ReportRequest {
  private list: ReportEntryMsg[] | undefined = undefined;

  constructor(
    readonly clientId: string,
    readonly seq: number,
    readonly generation: number,
    readonly intervalMs: number,
    readonly keyEpoch: number,
    readonly spanMs: number,
    /** How many entries. */
    readonly count: number,
    /** Each entry's key string, "" when it names its key by handle. */
    readonly keys: string[],
    /** `ENTRY_NUMBERS` per entry: handle, admitted, rejected, held, window_admitted, refunded. */
    readonly numbers: number[],
  ) {}

  get entries(): ReportEntryMsg[] {
    if (this.list !== undefined) return this.list;
    const list: ReportEntryMsg[] = new Array(this.count);
    const v = this.numbers;
    for (let i = 0, o = 0; i < this.count; i++, o += ENTRY_NUMBERS) {
      list[i] = {
        key: this.keys[i]!,
        keyHandle: v[o + AT_HANDLE]!,
        admitted: v[o + AT_ADMITTED]!,
        rejected: v[o + AT_REJECTED]!,
        held: v[o + AT_HELD]!,
        windowAdmitted: v[o + AT_WINDOW_ADMITTED]!,
        refunded: v[o + AT_REFUNDED]!,
      };
    }
    this.list = list;
    return list;
  }
}

/**
 * `n` zeros as an array of doubles. Columns are plain arrays of doubles (unboxed, on the JS heap:
 * young, gone at the next scavenge), not typed arrays: each typed array's buffer lives outside the
 * heap and counts as external memory, whose growth V8 answers by marking the whole heap (long at a
 * million counters), and the columns are 17 numbers an entry, new with every request and answer.
 */
function zeros(n: number): number[] {
  while (ZEROS.length < n) ZEROS.push(0);
  return ZEROS.slice(0, n);
}
/** Held as doubles from the start (the literal's 0.5), so every copy is an array of doubles. */
const ZEROS: number[] = [0.5].fill(0);

/** The entries' numbers while decoding, grown as needed; each request takes a copy of its part. */
let cols: number[] = zeros(ENTRY_NUMBERS * 1024);

/** One entry's fields into `cols` at `o` (zeros where absent), its key string returned. */
function entry(end: number, o: number): string {
  let key = "";
  if (cols.length < o + ENTRY_NUMBERS) cols = cols.concat(zeros(cols.length));
  const c = cols;
  c[o + AT_HANDLE] = 0;
  c[o + AT_ADMITTED] = 0;
  c[o + AT_REJECTED] = 0;
  c[o + AT_HELD] = 0;
  c[o + AT_WINDOW_ADMITTED] = 0;
  c[o + AT_REFUNDED] = 0;
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
        c[o + AT_HANDLE] = varint(end);
        break;
      case 2:
        expect(field, wire, 1);
        c[o + AT_ADMITTED] = double(end);
        break;
      case 3:
        expect(field, wire, 1);
        c[o + AT_REJECTED] = double(end);
        break;
      case 4:
        expect(field, wire, 1);
        c[o + AT_HELD] = double(end);
        break;
      case 5:
        expect(field, wire, 1);
        c[o + AT_WINDOW_ADMITTED] = double(end);
        break;
      case 10:
        expect(field, wire, 1);
        c[o + AT_REFUNDED] = double(end);
        break;
      default:
        if (field === 0) fail("field number 0");
        skip(wire, end);
    }
  }
  return key;
}

/** A `ReportRequest` from its bytes; throws ReportDecodeError saying what is wrong. */
export function decodeReportRequest(bytes: Buffer): DecodedReport {
  buf = bytes;
  view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  pos = 0;
  const end = bytes.length;
  let clientId = "";
  let seq = 0;
  let generation = 0;
  let intervalMs = 0;
  let keyEpoch = 0;
  let spanMs = 0;
  const keys: string[] = [];
  try {
    while (pos < end) {
      const tag = varint(end);
      const field = tag >>> 3;
      const wire = tag & 7;
      switch (field) {
        case 5: {
          expect(field, wire, 2);
          const n = length(end);
          keys.push(entry(pos + n, keys.length * ENTRY_NUMBERS));
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
    view = EMPTY_VIEW;
  }
  const numbers = cols.slice(0, keys.length * ENTRY_NUMBERS);
  return new DecodedReport(
    clientId,
    seq,
    generation,
    intervalMs,
    keyEpoch,
    spanMs,
    keys.length,
    keys,
    numbers,
  );
}

const EMPTY = Buffer.alloc(0);
const EMPTY_VIEW = new DataView(new ArrayBuffer(0));

// Encoding: one pass into a scratch buffer, then the bytes copied out at their length.

/** int32 (enums): a negative value takes ten bytes, sign-extended to 64 bits. */
function i32Size(v: number): number {
  return v < 0 ? 10 : varintSize(v >>> 0);
}

let out: Buffer;
let at = 0;

/** A uint32's varint at `p` in `b`; returns the position after it. */
function put32(b: Buffer, p: number, x: number): number {
  while (x > 0x7f) {
    b[p++] = (x & 0x7f) | 0x80;
    x >>>= 7;
  }
  b[p++] = x;
  return p;
}

function writeVarint32(v: number): void {
  at = put32(out, at, v);
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

function writeU64(v: number): void {
  const lo = words(v);
  writeVarint64(lo, wordHi);
}

function writeI32(v: number): void {
  if (v < 0) writeVarint64(v >>> 0, 0xffffffff);
  else writeVarint32(v >>> 0);
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

/** A KeyPolicy's number fields, in the order of their columns in `PolicyRows.numbers`. */
const POLICY_FIELDS = [
  "kind",
  "units",
  "fraction",
  "validMs",
  "remaining",
  "limit",
  "resetMs",
  "keyHandle",
  "gateways",
  "sharePerS",
] as const satisfies readonly (keyof KeyPolicy)[];
export const P_KIND = 0;
export const P_UNITS = 1;
export const P_FRACTION = 2;
export const P_VALID_MS = 3;
export const P_REMAINING = 4;
export const P_LIMIT = 5;
export const P_RESET_MS = 6;
export const P_KEY_HANDLE = 7;
export const P_GATEWAYS = 8;
export const P_SHARE_PER_S = 9;
/** The bit mask of the fields a row has (bit j: `POLICY_FIELDS[j]`), what `policy(i)` gives back. */
export const P_PRESENT = 10;
/** Numbers per policy in `PolicyRows.numbers`. */
export const POLICY_NUMBERS = 11;

/**
 * A response's policies as rows of numbers (absent fields 0) and, for the few with one, an item
 * error: what the Limiter writes for a request that came as columns, and what the encoder reads,
 * with no object (and boxed doubles) per policy. `policy(i)` gives row i as the KeyPolicy object
 * it stands for, with the same fields set.
 */
export class PolicyRows {
  readonly numbers: number[];
  private errors: (ItemError | undefined)[] | undefined = undefined;

  constructor(readonly count: number) {
    this.numbers = zeros(count * POLICY_NUMBERS);
  }

  /** Row i as `p` says, fields it lacks (undefined or null) left out. */
  set(i: number, p: KeyPolicy): void {
    const v = this.numbers;
    const o = i * POLICY_NUMBERS;
    let present = 0;
    for (let j = 0; j < POLICY_FIELDS.length; j++) {
      const x = p[POLICY_FIELDS[j]!];
      if (x != null) {
        v[o + j] = x;
        present |= 1 << j;
      } else v[o + j] = 0;
    }
    v[o + P_PRESENT] = present;
    if (p.error != null) {
      this.errors ??= [];
      this.errors[i] = p.error;
    } else if (this.errors !== undefined) this.errors[i] = undefined;
  }

  /** Sets field `j` (a `P_*` column) of row i. */
  put(i: number, j: number, x: number): void {
    const o = i * POLICY_NUMBERS;
    this.numbers[o + j] = x;
    this.numbers[o + P_PRESENT] = this.numbers[o + P_PRESENT]! | (1 << j);
  }

  error(i: number): ItemError | undefined {
    return this.errors?.[i];
  }

  /** Row i as a KeyPolicy object. */
  policy(i: number): KeyPolicy {
    const v = this.numbers;
    const o = i * POLICY_NUMBERS;
    const present = v[o + P_PRESENT]!;
    const out: KeyPolicy = {};
    for (let j = 0; j < POLICY_FIELDS.length; j++) if (present & (1 << j)) out[POLICY_FIELDS[j]!] = v[o + j]!;
    const e = this.errors?.[i];
    if (e != null) out.error = e;
    return out;
  }
}

/**
 * The Limiter's answer to a request that came as columns: `policies` made into objects only when
 * read (tracing, tests), once; the encoder reads `rows`. `policies` is a getter of the class: a
 * spread copy of an answer would lose it (none is made: the answer goes to the encoder).
 */
export class ReportAnswer implements ReportResponse {
  private list: KeyPolicy[] | undefined = undefined;
  readonly tooOld: boolean | undefined;

  constructor(
    readonly generation: number,
    readonly rows: PolicyRows,
    readonly duplicate: boolean,
    readonly keyEpoch: number,
    readonly configVersion: string,
    readonly incarnation: string,
    tooOld: boolean,
  ) {
    this.tooOld = tooOld ? true : undefined;
  }

  get policies(): KeyPolicy[] {
    if (this.list !== undefined) return this.list;
    const list: KeyPolicy[] = new Array(this.rows.count);
    for (let i = 0; i < this.rows.count; i++) list[i] = this.rows.policy(i);
    this.list = list;
    return list;
  }
}

/**
 * Row `o` written at `p` in `b` (`dv` its DataView: a double is one store); returns the position
 * after it. Positions are locals here, not the module's `at`: this runs once per policy.
 */
function writePolicy(
  b: Buffer,
  dv: DataView,
  p: number,
  v: number[],
  o: number,
  e: ItemError | undefined,
): number {
  const kind = v[o + P_KIND]!;
  if (kind > 0) {
    b[p++] = 0x08;
    p = put32(b, p, kind >>> 0);
  } else if (kind !== 0) {
    b[p++] = 0x08;
    at = p;
    writeI32(kind);
    p = at;
  }
  p = doubleField(b, dv, p, 0x11, v[o + P_UNITS]!);
  p = doubleField(b, dv, p, 0x19, v[o + P_FRACTION]!);
  p = u32Field(b, p, 0x20, v[o + P_VALID_MS]!);
  p = doubleField(b, dv, p, 0x29, v[o + P_REMAINING]!);
  p = doubleField(b, dv, p, 0x31, v[o + P_LIMIT]!);
  p = u32Field(b, p, 0x38, v[o + P_RESET_MS]!);
  if (e != null) {
    b[p++] = 0x42;
    p = put32(b, p, itemErrorSize(e));
    at = p;
    writeItemError(e);
    p = at;
  }
  p = u32Field(b, p, 0x48, v[o + P_KEY_HANDLE]!);
  p = u32Field(b, p, 0x50, v[o + P_GATEWAYS]!);
  p = doubleField(b, dv, p, 0x59, v[o + P_SHARE_PER_S]!);
  return p;
}

/** A double field (`tag`, then 8 bytes) at `p` unless `x` is +0, as protobufjs leaves it out. */
function doubleField(b: Buffer, dv: DataView, p: number, tag: number, x: number): number {
  if (Object.is(x, 0)) return p;
  b[p] = tag;
  dv.setFloat64(p + 1, x, true);
  return p + 9;
}

/** A uint32 varint field at `p` unless `x` is 0. */
function u32Field(b: Buffer, p: number, tag: number, x: number): number {
  if (x === 0) return p;
  b[p] = tag;
  return put32(b, p + 1, x >>> 0);
}

/** Rows for a response given as objects (the encoder's other callers), grown as needed. */
let spareRows = new PolicyRows(0);
function rowsOf(policies: KeyPolicy[]): PolicyRows {
  if (spareRows.count < policies.length)
    spareRows = new PolicyRows(Math.max(policies.length, 2 * spareRows.count));
  for (let i = 0; i < policies.length; i++) spareRows.set(i, policies[i]!);
  return spareRows;
}

/**
 * Where a response is written before its bytes are copied out at their exact length: one pass
 * over the policies, each written with a one-byte length in front (a policy without an item error
 * is under 128 bytes; a longer one is moved up to make room for its longer length). Grown as
 * needed, never shrunk.
 */
let scratch = Buffer.allocUnsafe(64 * 1024);
let scratchView = new DataView(scratch.buffer, scratch.byteOffset, scratch.byteLength);
/** The most a policy row without an item error takes, with its tag and length. */
const MAX_ROW_BYTES = 2 + 11 + 5 * 9 + 4 * 6;

/** `scratch` with room for `n` bytes past `p`, its first `p` kept. */
function room(p: number, n: number): void {
  if (p + n <= scratch.length) return;
  const grown = Buffer.allocUnsafe(Math.max(2 * scratch.length, p + n));
  scratch.copy(grown, 0, 0, p);
  scratch = grown;
  scratchView = new DataView(grown.buffer, grown.byteOffset, grown.byteLength);
}

/** A `ReportResponse`'s bytes, the same as protobufjs's encoder writes. */
export function encodeReportResponse(m: ReportResponse): Buffer {
  const at = writeReportResponse(m);
  const bytes = Buffer.allocUnsafe(at);
  scratch.copy(bytes, 0, 0, at);
  return bytes;
}

/**
 * The same bytes behind gRPC's 5-byte message prefix (uncompressed, length), in one Buffer: what
 * the lean transport sends. Framing `encodeReportResponse`'s bytes instead made and copied a
 * response (15 KB for 500 entries) twice.
 */
export function frameReportResponse(m: ReportResponse): Buffer {
  const at = writeReportResponse(m);
  const frame = grpcPrefixed(at);
  scratch.copy(frame, 5, 0, at);
  return frame;
}

/** Writes `m` into `scratch` from 0; returns its length. */
function writeReportResponse(m: ReportResponse): number {
  const answer = m instanceof ReportAnswer ? m : undefined;
  const count = answer !== undefined ? answer.rows.count : m.policies != null ? m.policies.length : 0;
  const rows = answer !== undefined ? answer.rows : count > 0 ? rowsOf(m.policies) : spareRows;
  const v = rows.numbers;
  room(0, 16);
  out = scratch;
  at = 0;
  if (num(m.generation)) {
    out[at++] = 0x08;
    writeU64(m.generation);
  }
  let p = at;
  for (let i = 0, o = 0; i < count; i++, o += POLICY_NUMBERS) {
    const e = rows.error(i);
    room(p, e != null ? MAX_ROW_BYTES + 16 + itemErrorSize(e) : MAX_ROW_BYTES);
    const b = scratch;
    b[p] = 0x12;
    const start = p + 2;
    const end = writePolicy(b, scratchView, start, v, o, e);
    const size = end - start;
    if (size < 0x80) {
      b[p + 1] = size;
      p = end;
    } else {
      const lengthBytes = varintSize(size);
      b.copyWithin(start + lengthBytes - 1, start, end);
      p = put32(b, p + 1, size) + size;
    }
  }
  const versionBytes = str(m.configVersion) ? Buffer.byteLength(m.configVersion) : -1;
  const incarnationBytes = str(m.incarnation) ? Buffer.byteLength(m.incarnation) : -1;
  room(p, 32 + Math.max(0, versionBytes) + Math.max(0, incarnationBytes));
  out = scratch;
  at = p;
  if (bool(m.duplicate)) {
    out[at++] = 0x18;
    out[at++] = m.duplicate ? 1 : 0;
  }
  if (num(m.keyEpoch)) {
    out[at++] = 0x20;
    writeVarint32(m.keyEpoch >>> 0);
  }
  if (versionBytes >= 0) {
    out[at++] = 0x2a;
    writeString(m.configVersion, versionBytes);
  }
  if (incarnationBytes >= 0) {
    out[at++] = 0x32;
    writeString(m.incarnation, incarnationBytes);
  }
  if (bool(m.tooOld)) {
    out[at++] = 0x38;
    out[at++] = m.tooOld ? 1 : 0;
  }
  out = EMPTY;
  return at;
}
