/**
 * Protobuf wire surgery for the RPC fuzzer: a message parsed into its fields (nested messages
 * where a length-delimited payload parses cleanly as one), mutated, and written back with
 * consistent lengths, or broken on purpose at the framing level. Works on bytes, not on the
 * schema, so it reaches what a schema-aware encoder would never write: a uint64 past 2^53, a
 * double that is NaN, a field with the wrong wire type, a length that claims 4 GiB.
 */

export type WireType = 0 | 1 | 2 | 5;

export interface WireField {
  no: number;
  wt: WireType;
  /** wt 0: the varint's value. */
  v?: bigint;
  /** wt 1, 5, 2: the raw payload. */
  b?: Uint8Array;
  /** wt 2 whose payload parsed as a message. */
  kids?: WireField[];
}

const U64 = (1n << 64n) - 1n;

function readVarint(buf: Uint8Array, pos: number): [bigint, number] | undefined {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    const byte = buf[pos + i];
    if (byte === undefined) return undefined;
    v |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return [v, pos + i + 1];
  }
  return undefined;
}

export function varint(v: bigint): number[] {
  let x = v & U64;
  const out: number[] = [];
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x !== 0n) byte |= 0x80;
    out.push(byte);
  } while (x !== 0n);
  return out;
}

/** The fields of `buf`, or undefined when it is not a clean message (groups count as not). */
export function parseMessage(buf: Uint8Array, depth = 0): WireField[] | undefined {
  const out: WireField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const tag = readVarint(buf, pos);
    if (!tag || tag[0] > 0xffffffffn) return undefined;
    pos = tag[1];
    const no = Number(tag[0] >> 3n);
    const wt = Number(tag[0] & 7n);
    if (no === 0) return undefined;
    if (wt === 0) {
      const v = readVarint(buf, pos);
      if (!v) return undefined;
      out.push({ no, wt, v: v[0] });
      pos = v[1];
    } else if (wt === 1 || wt === 5) {
      const n = wt === 1 ? 8 : 4;
      if (pos + n > buf.length) return undefined;
      out.push({ no, wt, b: buf.slice(pos, pos + n) });
      pos += n;
    } else if (wt === 2) {
      const len = readVarint(buf, pos);
      if (!len || len[1] + Number(len[0]) > buf.length) return undefined;
      const b = buf.slice(len[1], len[1] + Number(len[0]));
      const kids = depth < 8 && b.length > 0 ? parseMessage(b, depth + 1) : undefined;
      out.push({ no, wt, b, kids });
      pos = len[1] + Number(len[0]);
    } else return undefined;
  }
  return out;
}

export function encodeMessage(fields: readonly WireField[]): Uint8Array {
  const parts: number[] = [];
  for (const f of fields) {
    parts.push(...varint((BigInt(f.no) << 3n) | BigInt(f.wt)));
    if (f.wt === 0) parts.push(...varint(f.v ?? 0n));
    else if (f.wt === 2) {
      const b = f.kids ? encodeMessage(f.kids) : (f.b ?? new Uint8Array());
      parts.push(...varint(BigInt(b.length)));
      for (const x of b) parts.push(x);
    } else for (const x of f.b ?? new Uint8Array(f.wt === 1 ? 8 : 4)) parts.push(x);
  }
  return Uint8Array.from(parts);
}

/** Every field of the tree with the list that holds it, for picking one to mutate. */
function allFields(fields: WireField[], out: { list: WireField[]; i: number }[] = []) {
  fields.forEach((f, i) => {
    out.push({ list: fields, i });
    if (f.kids) allFields(f.kids, out);
  });
  return out;
}

function doubleBytes(x: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, x, true);
  return b;
}

type Rand = () => number;
const pick = <T>(rand: Rand, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

/** A mutation that keeps the framing valid: the message still parses, its values are hostile. */
type TreeMutation = (fields: WireField[], rand: Rand) => boolean;

function onField(pred: (f: WireField) => boolean, change: (f: WireField, rand: Rand) => void): TreeMutation {
  return (fields, rand) => {
    const hits = allFields(fields).filter(({ list, i }) => pred(list[i]!));
    if (hits.length === 0) return false;
    const { list, i } = pick(rand, hits);
    change(list[i]!, rand);
    return true;
  };
}

const HUGE_VARINTS = [(1n << 53n) + 1n, 1n << 63n, U64, U64 - 1n];
const HOSTILE_DOUBLES = [
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  -1,
  -0,
  Number.MAX_VALUE,
  2 ** 53 + 2,
  Number.MIN_VALUE,
];
const HOSTILE_STRINGS = [
  new Uint8Array(64 * 1024).fill(0x61),
  Uint8Array.from([0xff, 0xfe, 0xc3]),
  new TextEncoder().encode("a/\ud800=%/%%"),
  new Uint8Array(0),
];

export const TREE_MUTATIONS: Record<string, TreeMutation> = {
  "varint past 2^53": onField(
    (f) => f.wt === 0,
    (f, rand) => {
      f.v = pick(rand, HUGE_VARINTS);
    },
  ),
  "double NaN/Inf/negative": onField(
    (f) => f.wt === 1,
    (f, rand) => {
      f.b = doubleBytes(pick(rand, HOSTILE_DOUBLES));
    },
  ),
  "hostile string": onField(
    (f) => f.wt === 2,
    (f, rand) => {
      f.kids = undefined;
      f.b = pick(rand, HOSTILE_STRINGS);
    },
  ),
  "wire type swap": onField(
    () => true,
    (f, rand) => {
      const to = pick(
        rand,
        ([0, 1, 2, 5] as const).filter((w) => w !== f.wt),
      );
      f.wt = to;
      f.kids = undefined;
      f.v = 1n;
      f.b = to === 1 ? new Uint8Array(8) : to === 5 ? new Uint8Array(4) : new Uint8Array([1]);
    },
  ),
  "field repeated 2000 times": (fields, rand) => {
    const hits = allFields(fields);
    if (hits.length === 0) return false;
    const { list, i } = pick(rand, hits);
    const f = list[i]!;
    const copies = Array.from({ length: 2000 }, () => f);
    list.splice(i, 1, ...copies);
    return true;
  },
  "unknown field": (fields, rand) => {
    const hits = allFields(fields).filter(({ list, i }) => list[i]!.kids !== undefined);
    const target = hits.length > 0 && rand() < 0.5 ? pick(rand, hits) : undefined;
    const into = target ? target.list[target.i]!.kids! : fields;
    into.push({ no: 1000 + Math.floor(rand() * 1000), wt: 2, b: new Uint8Array([1, 2, 3]) });
    return true;
  },
};

/** Mutations that break the framing itself: the decoder must refuse them. */
export const BYTE_MUTATIONS: Record<string, (base: Uint8Array, rand: Rand) => Uint8Array> = {
  "length claims 4 GiB": (base) => Uint8Array.from([...base, 0x0a, ...varint(0xffffffffn)]),
  truncated: (base, rand) => base.slice(0, Math.floor(rand() * base.length)),
  "bit flips": (base, rand) => {
    const b = base.length > 0 ? Uint8Array.from(base) : new Uint8Array(1);
    for (let n = 1 + Math.floor(rand() * 4); n > 0; n--) {
      const i = Math.floor(rand() * b.length);
      b[i] = b[i]! ^ (1 << Math.floor(rand() * 8));
    }
    return b;
  },
  "random bytes": (_base, rand) => Uint8Array.from({ length: Math.floor(rand() * 96) }, () => rand() * 256),
};

export const MUTATION_KINDS = [...Object.keys(TREE_MUTATIONS), ...Object.keys(BYTE_MUTATIONS)];

/** The `k`-th kind of mutation applied to `base` (kinds taken in turn, so each one is exercised). */
export function mutate(base: Uint8Array, k: number, rand: Rand): { kind: string; bytes: Uint8Array } {
  const kind = MUTATION_KINDS[k % MUTATION_KINDS.length]!;
  const tree = TREE_MUTATIONS[kind];
  if (tree) {
    const fields = parseMessage(base) ?? [];
    if (tree(fields, rand)) return { kind, bytes: encodeMessage(fields) };
    return { kind, bytes: BYTE_MUTATIONS["bit flips"]!(base, rand) };
  }
  return { kind, bytes: BYTE_MUTATIONS[kind]!(base, rand) };
}
