import type { CheckItemMsg, CheckRequest, EnvoyDescriptor, EnvoyRequest } from "./messages.js";

/**
 * A direct decoder of ShouldRateLimit's request (envoy.service.ratelimit.v3.RateLimitRequest) in
 * its common shape: a domain, descriptors of plain entries, a request-wide hits_addend. It reads
 * the bytes in one pass into plain objects, where protobufjs's reflected decoder creates a
 * Reader and a message object per level. Anything else (a descriptor's limit override or
 * hits_addend, unknown fields, wire types or varints protobufjs would read differently, a
 * message cut short) returns undefined and the caller decodes with protobufjs, so both give the
 * same request or error (test/protocol/fast-decode.test.ts). Only ASCII strings are read here:
 * any other byte goes to protobufjs, which rejects invalid UTF-8.
 */

/** Where the last varint read ended (set by `varint`). */
let at = 0;

/** The varint at `pos` (below 2^28), its end in `at`; -1 if it is longer or cut short. */
function varint(b: Buffer, pos: number, end: number): number {
  let v = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (pos >= end) return -1;
    const c = b[pos++]!;
    v |= (c & 0x7f) << shift;
    if (c < 0x80) {
      at = pos;
      return v;
    }
  }
  return -1;
}

/**
 * Short strings read before, by a hash of their bytes: callers send the same few domains, keys and
 * values call after call, so most are found here, with no string made (a call into C++ each) and
 * their hash, which V8 keeps in the string, already computed for the Map look-ups that follow.
 * One string a slot, a newer one replacing it: at most INTERN_SLOTS x INTERN_MAX characters, and
 * requests that keep missing cost only the hashing.
 */
const INTERN_SLOTS = 4096;
const INTERN_MAX = 64;
const interned: string[] = new Array<string>(INTERN_SLOTS).fill("");

/** The string at `start..end` if it is all ASCII; undefined otherwise (protobufjs checks UTF-8). */
export function ascii(b: Buffer, start: number, end: number): string | undefined {
  const n = end - start;
  if (n > INTERN_MAX) {
    for (let i = start; i < end; i++) if (b[i]! >= 0x80) return undefined;
    return b.toString("latin1", start, end);
  }
  // FNV-1a over the bytes, checking each is ASCII.
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    const c = b[i]!;
    if (c >= 0x80) return undefined;
    h = Math.imul(h ^ c, 0x01000193);
  }
  const slot = (h ^ n) & (INTERN_SLOTS - 1);
  const known = interned[slot]!;
  if (known.length === n) {
    let i = 0;
    while (i < n && known.charCodeAt(i) === b[start + i]) i++;
    if (i === n) return known;
  }
  const s = b.toString("latin1", start, end);
  interned[slot] = s;
  return s;
}

function entry(b: Buffer, pos: number, end: number): { key: string; value: string } | undefined {
  let key = "";
  let value = "";
  while (pos < end) {
    const tag = b[pos++]!;
    if (tag !== 0x0a && tag !== 0x12) return undefined;
    const len = varint(b, pos, end);
    if (len < 0 || at + len > end) return undefined;
    const s = ascii(b, at, at + len);
    if (s === undefined) return undefined;
    if (tag === 0x0a) key = s;
    else value = s;
    pos = at + len;
  }
  return { key, value };
}

function descriptor(b: Buffer, pos: number, end: number): EnvoyDescriptor | undefined {
  const entries: { key: string; value: string }[] = [];
  while (pos < end) {
    if (b[pos++] !== 0x0a) return undefined;
    const len = varint(b, pos, end);
    if (len < 0 || at + len > end) return undefined;
    const start = at;
    const e = entry(b, start, start + len);
    if (e === undefined) return undefined;
    entries.push(e);
    pos = start + len;
  }
  return { entries, limit: null, hitsAddend: null };
}

/** The request in `b`, or undefined when it is not in the common shape (decode it with protobufjs). */
export function decodeEnvoyRequest(b: Buffer): EnvoyRequest | undefined {
  let domain = "";
  let hitsAddend = 0;
  const descriptors: EnvoyDescriptor[] = [];
  const end = b.length;
  let pos = 0;
  while (pos < end) {
    const tag = b[pos++]!;
    if (tag === 0x18) {
      const v = varint(b, pos, end);
      if (v < 0) return undefined;
      hitsAddend = v;
      pos = at;
      continue;
    }
    if (tag !== 0x0a && tag !== 0x12) return undefined;
    const len = varint(b, pos, end);
    if (len < 0 || at + len > end) return undefined;
    const start = at;
    if (tag === 0x0a) {
      const s = ascii(b, start, start + len);
      if (s === undefined) return undefined;
      domain = s;
    } else {
      const d = descriptor(b, start, start + len);
      if (d === undefined) return undefined;
      descriptors.push(d);
    }
    pos = start + len;
  }
  return { domain, descriptors, hitsAddend };
}

// ---- shardlimit.v1.CheckRequest

/**
 * The message classes protobufjs decodes a CheckRequest into (its generated constructors: defaults
 * on the prototype, `items` an own empty array), so the direct decoder's objects are the very kind
 * protobufjs's are.
 */
export interface CheckRequestClasses {
  request: new () => CheckRequest;
  item: new () => CheckItemMsg;
}

/** A one-byte varint at `pos` (0-127), or -1 (a longer varint goes to protobufjs). */
function small(b: Buffer, pos: number, end: number): number {
  if (pos >= end) return -1;
  const c = b[pos]!;
  return c < 0x80 ? c : -1;
}

function checkItem(
  b: Buffer,
  pos: number,
  end: number,
  Item: new () => CheckItemMsg,
): CheckItemMsg | undefined {
  const item = new Item();
  /** Fields written by name, as protobufjs's decoder does (own when set, deleted when default). */
  const m = item as unknown as Record<string, unknown>;
  while (pos < end) {
    const tag = b[pos++]!;
    if (tag === 0x0a) {
      const len = varint(b, pos, end);
      if (len < 0 || at + len > end) return undefined;
      const s = ascii(b, at, at + len);
      if (s === undefined) return undefined;
      if (s.length > 0) m.key = s;
      else delete m.key;
      pos = at + len;
    } else if (tag === 0x11) {
      if (pos + 8 > end) return undefined;
      const v = b.readDoubleLE(pos);
      // As protobufjs: 0 is the default (not kept), -0 is kept.
      if (!Object.is(v, 0)) m.cost = v;
      else delete m.cost;
      pos += 8;
    } else if (tag === 0x18 || tag === 0x50 || tag === 0x60) {
      const v = small(b, pos, end);
      if (v < 0) return undefined;
      pos++;
      const field = tag === 0x18 ? "priority" : tag === 0x50 ? "ticket" : "maxWaitMs";
      if (v !== 0) m[field] = tag === 0x50 ? true : v;
      else delete m[field];
    } else {
      return undefined;
    }
  }
  return item;
}

/**
 * A direct decoder of Check's request (shardlimit.v1.CheckRequest) in its common shape: items of
 * an ASCII key, a cost, and one-byte priority, ticket and max_wait_ms; atomic, explain, a
 * generation and ticket timeout below 2^28. Fields are set, or left to their defaults, exactly
 * as protobufjs's generated decoder does. Anything else (unknown fields or wire types, longer
 * varints, non-ASCII keys, a message cut short) returns undefined: decode it with protobufjs, so
 * both give the same request or error (test/protocol/fast-decode.test.ts).
 */
export function checkRequestDecoder(classes: CheckRequestClasses): (b: Buffer) => CheckRequest | undefined {
  const { request: Request, item: Item } = classes;
  return (b) => {
    const req = new Request();
    const m = req as unknown as Record<string, unknown>;
    const end = b.length;
    let pos = 0;
    while (pos < end) {
      const tag = b[pos++]!;
      if (tag === 0x0a) {
        const len = varint(b, pos, end);
        if (len < 0 || at + len > end) return undefined;
        const start = at;
        const it = checkItem(b, start, start + len, Item);
        if (it === undefined) return undefined;
        req.items.push(it);
        pos = start + len;
        continue;
      }
      let field: string;
      if (tag === 0x10) field = "atomic";
      else if (tag === 0x18) field = "generation";
      else if (tag === 0x50) field = "ticketTimeoutMs";
      else if (tag === 0x58) field = "explain";
      else return undefined;
      const v = varint(b, pos, end);
      if (v < 0) return undefined;
      pos = at;
      if (v !== 0) m[field] = tag === 0x10 || tag === 0x58 ? true : v;
      else delete m[field];
    }
    return req;
  };
}
