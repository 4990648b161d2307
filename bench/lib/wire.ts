import { root } from "../../src/protocol/proto.js";

/**
 * Pre-encoded request bytes, so a load generator spends its time sending, not encoding.
 * Protobuf messages concatenate field-wise: the per-request header (client_id, seq) is encoded
 * alone and prepended to a body encoded once (interval_ms and the repeated entries).
 */

export const ReportRequestType = root.lookupType("shardlimit.v1.ReportRequest");
export const ReportResponseType = root.lookupType("shardlimit.v1.ReportResponse");
export const CheckRequestType = root.lookupType("shardlimit.v1.CheckRequest");
export const CheckResponseType = root.lookupType("shardlimit.v1.CheckResponse");
export const EnvoyRequestType = root.lookupType("envoy.service.ratelimit.v3.RateLimitRequest");
export const EnvoyResponseType = root.lookupType("envoy.service.ratelimit.v3.RateLimitResponse");

/** The benchmark config: one domain, token bucket on `k`, fixed window on `f`; limits never bind. */
export const BENCH_CONFIG = `
domain: bench
descriptors:
  - key: k
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 1000000000
  - key: s
    rate_limit:
      algorithm: sliding_window
      unit: second
      requests_per_unit: 1000000000
  - key: f
    rate_limit:
      unit: second
      requests_per_unit: 1000000000
`;

export function reportKey(i: number): string {
  return `bench/k=${i}`;
}

export interface EntryShape {
  key: string;
  admitted: number;
  rejected: number;
  held: number;
  windowAdmitted: number;
}

/** What a gateway reports for key `i` in one interval: a few admitted, now and then some rejected. */
export function entryFor(i: number): EntryShape {
  return {
    key: reportKey(i),
    admitted: 1 + (i % 5),
    rejected: i % 10 === 0 ? 2 : 0,
    held: 0,
    windowAdmitted: 0,
  };
}

/**
 * Bodies of `keys / batch` report requests: chunk c reports keys c*batch .. c*batch+batch-1, or
 * with `order` (a permutation of the key indexes) keys order[c*batch] .. in that order.
 */
export function reportBodies(
  keys: number,
  batch: number,
  intervalMs = 100,
  order?: readonly number[],
): Buffer[] {
  const bodies: Buffer[] = [];
  for (let start = 0; start < keys; start += batch) {
    const entries: EntryShape[] = [];
    for (let i = start; i < Math.min(keys, start + batch); i++) entries.push(entryFor(order?.[i] ?? i));
    bodies.push(Buffer.from(ReportRequestType.encode({ intervalMs, entries }).finish()));
  }
  return bodies;
}

/**
 * Bodies that name keys by the handles the server issued: `responses[c]` answered string body `c`
 * (`reportBodies` order without `order`), so key k's handle is entry k%batch of response
 * floor(k/batch). Entry i of chunk c is key c*batch+i, or with `order` key order[c*batch+i], with
 * the same counts as by string.
 */
export function handleBodies(
  responses: { keyEpoch: number; policies: { keyHandle?: number }[] }[],
  batch: number,
  intervalMs = 100,
  order?: readonly number[],
): Buffer[] {
  // Key k's handle is found by position: every response but the last answered `batch` keys,
  // and one key table issued them all (a table that started over would have changed epoch).
  const keyEpoch = responses[0]?.keyEpoch ?? 0;
  responses.forEach((r, c) => {
    if (r.keyEpoch !== keyEpoch)
      throw new Error(`response ${c} has key epoch ${r.keyEpoch}, not ${keyEpoch}`);
    if (c < responses.length - 1 && r.policies.length !== batch)
      throw new Error(`response ${c} answered ${r.policies.length} keys, not ${batch}`);
  });
  const keys = responses.reduce((n, r) => n + r.policies.length, 0);
  const bodies: Buffer[] = [];
  for (let start = 0; start < keys; start += batch) {
    const entries = [];
    for (let j = start; j < Math.min(keys, start + batch); j++) {
      const k = order?.[j] ?? j;
      const handle = responses[Math.floor(k / batch)]!.policies[k % batch]!.keyHandle;
      if (!handle) throw new Error(`no key handle for key ${k}`);
      const { key: _key, ...counts } = entryFor(k);
      entries.push({ ...counts, keyHandle: handle });
    }
    bodies.push(Buffer.from(ReportRequestType.encode({ intervalMs, keyEpoch, entries }).finish()));
  }
  return bodies;
}

/** `client_id` (field 1) and `seq` (field 2) of a ReportRequest, to prepend to a body. */
export function reportHeader(clientId: Buffer, seq: number): Buffer {
  if (clientId.length > 127) throw new RangeError("client id too long for the one-byte length");
  const b = Buffer.allocUnsafe(2 + clientId.length + 1 + 10);
  let o = 0;
  b[o++] = 0x0a; // field 1, length-delimited
  b[o++] = clientId.length;
  o += clientId.copy(b, o);
  b[o++] = 0x10; // field 2, varint
  let v = seq;
  while (v >= 0x80) {
    b[o++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  b[o++] = v;
  return b.subarray(0, o);
}

export function reportRequest(clientId: Buffer, seq: number, body: Buffer): Buffer {
  return Buffer.concat([reportHeader(clientId, seq), body]);
}

/** CheckRequest bytes of `batch` consecutive `bench/k=` keys, cost 1, for keys 0..keys-1. */
export function checkRequests(keys: number, batch: number): Buffer[] {
  const out: Buffer[] = [];
  for (let start = 0; start < keys; start += batch) {
    const items: { key: string; cost: number }[] = [];
    for (let i = start; i < Math.min(keys, start + batch); i++) items.push({ key: reportKey(i), cost: 1 });
    out.push(Buffer.from(CheckRequestType.encode({ items }).finish()));
  }
  return out;
}

/** Envoy RateLimitRequest bytes, one descriptor [("f", i)] each, domain `bench`. */
export function envoyRequests(values: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < values; i++) {
    out.push(
      Buffer.from(
        EnvoyRequestType.encode({
          domain: "bench",
          descriptors: [{ entries: [{ key: "f", value: String(i) }] }],
        }).finish(),
      ),
    );
  }
  return out;
}
