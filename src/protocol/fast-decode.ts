import type { EnvoyDescriptor, EnvoyRequest } from "./messages.js";

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

/** The string at `start..end` if it is all ASCII; undefined otherwise (protobufjs checks UTF-8). */
function ascii(b: Buffer, start: number, end: number): string | undefined {
  for (let i = start; i < end; i++) if (b[i]! >= 0x80) return undefined;
  return b.toString("latin1", start, end);
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
