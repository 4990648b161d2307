import type { DescriptorEntry } from "./types.js";

/**
 * Canonical counter keys: `domain/k1=v1/k2=v2`. Clients send these in batched reports and
 * `Check`, so one string both names the counter and can be parsed back into the descriptor.
 * `/`, `=` and `%` inside a domain, key or value are percent-encoded so the split is unambiguous.
 */

const NEEDS_ESCAPE = /[/=%]/;

/** Escapes one domain, key or value; also used for rule ids so they read like counter keys. */
export function escapePart(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return s;
  return s.replace(/%/g, "%25").replace(/\//g, "%2F").replace(/=/g, "%3D");
}

function unescapePart(s: string): string {
  if (s.indexOf("%") < 0) return s;
  return s.replace(/%2F/gi, "/").replace(/%3D/gi, "=").replace(/%25/g, "%");
}

export function encodeKey(domain: string, entries: readonly DescriptorEntry[]): string {
  let out = escapePart(domain);
  for (const e of entries) out += `/${escapePart(e.key)}=${escapePart(e.value)}`;
  return out;
}

/** The domain of a canonical key (the part before its first `/`), without decoding the rest. */
export function keyDomain(key: string): string {
  const slash = key.indexOf("/");
  return unescapePart(slash < 0 ? key : key.slice(0, slash));
}

export interface DecodedKey {
  domain: string;
  entries: DescriptorEntry[];
}

/** Returns an error message instead of throwing, since bad keys arrive per item in batches. */
export function decodeKey(key: string): DecodedKey | string {
  const parts = key.split("/");
  const domain = unescapePart(parts[0] ?? "");
  if (domain === "") return "key has an empty domain";
  if (parts.length < 2) return "key has no descriptor entries (expected domain/key=value...)";
  const entries: DescriptorEntry[] = [];
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i]!;
    const eq = part.indexOf("=");
    if (eq <= 0) return `key entry ${i} (${JSON.stringify(part)}) is not key=value`;
    entries.push({ key: unescapePart(part.slice(0, eq)), value: unescapePart(part.slice(eq + 1)) });
  }
  return { domain, entries };
}
