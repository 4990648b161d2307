import xxhash from "xxhash-wasm";

/**
 * Where a shard key lands in the key space: the high 32 bits of its xxHash64. Slice boundaries
 * are kept at that granularity (multiples of 2^32 in the 64-bit space): billions of positions for
 * at most thousands of slices, and the hot path compares plain numbers, never BigInts.
 */
const { h64 } = await xxhash();

export function keyPoint(shardKey: string): number {
  return Number(h64(shardKey) >> 32n);
}

/** The 64-bit start of a point, as the decimal string the wire carries (it exceeds 2^53). */
export function pointToWire(point: number): string {
  return (BigInt(point) << 32n).toString();
}

export function pointFromWire(start: string): number | undefined {
  if (!/^\d{1,20}$/.test(start)) return undefined;
  const v = BigInt(start);
  if (v >= 1n << 64n || (v & 0xffff_ffffn) !== 0n) return undefined;
  return Number(v >> 32n);
}
