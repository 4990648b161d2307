import type { Etcd3 } from "etcd3";
import { z } from "zod";
import { type LimitOverride, LimitOverrideSchema } from "../config/overrides.js";
import type { ConfigSource } from "../config/types.js";

/**
 * Limits in etcd (`shardlimit limits ...`, servers with `--limits-from etcd`), under the cluster
 * prefix:
 *   <prefix>limits/head               {version, digest, at}: the version in force
 *   <prefix>limits/versions/<n>       {version, at, comment, sources}: its YAML files, n zero-padded
 *   <prefix>limits/overrides/<key>    a LimitOverride; bound to a lease when it has a TTL
 * A push writes the next version and moves the head in one transaction that succeeds only if the
 * head is still the one it read, so two pushes at once cannot both take a number; it deletes the
 * version KEEP_VERSIONS back, so history stays bounded.
 */

export const KEEP_VERSIONS = 50;

export const LimitsHeadSchema = z.object({
  version: z.number().int().positive(),
  /** The compiled config's version (a digest of its files), as servers report it. */
  digest: z.string(),
  at: z.number().int().nonnegative(),
});
export type LimitsHead = z.infer<typeof LimitsHeadSchema>;

export const LimitsVersionSchema = z.object({
  version: z.number().int().positive(),
  digest: z.string(),
  at: z.number().int().nonnegative(),
  comment: z.string(),
  sources: z.array(z.object({ file: z.string().min(1), text: z.string() })).min(1),
});
export type LimitsVersion = z.infer<typeof LimitsVersionSchema>;

export function limitsPrefix(prefix: string): string {
  return `${prefix}limits/`;
}
const HEAD = "head";
const VERSIONS = "versions/";
const OVERRIDES = "overrides/";
const versionName = (n: number) => `${VERSIONS}${String(n).padStart(10, "0")}`;

/** What is under `limitsPrefix`, keys relative to it (a PrefixView's entries, or one read). */
export interface LimitsState {
  head: LimitsHead | undefined;
  /** The head's version, when it is there and well-formed. */
  current: LimitsVersion | undefined;
  versions: LimitsVersion[];
  overrides: LimitOverride[];
  /** Records that could not be read, named. */
  problems: string[];
}

/** `history: false` reads only the head's version of the history (servers, on every change). */
export function limitsState(entries: ReadonlyMap<string, string>, opts = { history: true }): LimitsState {
  const problems: string[] = [];
  const parse = <T>(name: string, text: string, schema: z.ZodType<T>): T | undefined => {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const r = schema.safeParse(json);
    if (r.success) return r.data;
    problems.push(`${name} is malformed`);
    return undefined;
  };
  const headText = entries.get(HEAD);
  const head = headText === undefined ? undefined : parse(HEAD, headText, LimitsHeadSchema);
  const versions: LimitsVersion[] = [];
  const overrides: LimitOverride[] = [];
  const headName = head && versionName(head.version);
  for (const [name, text] of entries) {
    if (name.startsWith(VERSIONS) && (opts.history || name === headName)) {
      const v = parse(name, text, LimitsVersionSchema);
      if (v) versions.push(v);
    } else if (name.startsWith(OVERRIDES)) {
      const o = parse(name, text, LimitOverrideSchema);
      if (o) overrides.push(o);
    }
  }
  versions.sort((a, b) => a.version - b.version);
  const current = head && versions.find((v) => v.version === head.version);
  if (head && !current) problems.push(`version ${head.version} (the head) is missing`);
  return { head, current, versions, overrides, problems };
}

export async function readLimits(client: Etcd3, prefix: string): Promise<LimitsState> {
  const p = limitsPrefix(prefix);
  const res = await client.getAll().prefix(p).exec();
  return limitsState(new Map(res.kvs.map((kv) => [kv.key.toString().slice(p.length), kv.value.toString()])));
}

/**
 * Writes `sources` as the next version and makes it current, atomically; retried when another
 * push moved the head in between. Returns the new head.
 */
export async function pushLimits(
  client: Etcd3,
  prefix: string,
  v: { digest: string; sources: readonly ConfigSource[]; comment: string; at: number },
): Promise<LimitsHead> {
  const p = limitsPrefix(prefix);
  for (let attempt = 0; attempt < 10; attempt++) {
    const got = await client.get(`${p}${HEAD}`).exec();
    const kv = got.kvs[0];
    const prev = kv ? LimitsHeadSchema.safeParse(JSON.parse(kv.value.toString())) : undefined;
    if (prev && !prev.success) throw new Error(`${p}${HEAD} is malformed; fix or delete it`);
    const version = (prev?.data.version ?? 0) + 1;
    const head: LimitsHead = { version, digest: v.digest, at: v.at };
    const record: LimitsVersion = {
      version,
      digest: v.digest,
      at: v.at,
      comment: v.comment,
      sources: [...v.sources],
    };
    const ops: (ReturnType<Etcd3["put"]> | ReturnType<ReturnType<Etcd3["delete"]>["key"]>)[] = [
      client.put(`${p}${versionName(version)}`).value(JSON.stringify(record)),
      client.put(`${p}${HEAD}`).value(JSON.stringify(head)),
    ];
    if (version > KEEP_VERSIONS) ops.push(client.delete().key(`${p}${versionName(version - KEEP_VERSIONS)}`));
    const res = await client
      .if(`${p}${HEAD}`, "Mod", "==", kv ? kv.mod_revision : 0)
      .then(...ops)
      .commit()
      .catch((err: Error) => {
        if (!/request is too large|RESOURCE_EXHAUSTED|larger than max/i.test(err.message)) throw err;
        const bytes = Buffer.byteLength(JSON.stringify(record));
        throw new Error(
          `version ${version} is ${bytes} bytes as stored, more than etcd takes in one request (its --max-request-bytes, 1.5 MiB by default); nothing was pushed`,
        );
      });
    if (res.succeeded) return head;
  }
  throw new Error("another push kept moving the head; try again");
}

/** Stores an override; with `ttlMs`, bound to a lease etcd deletes it with (servers also check `expiresAt`). */
export async function putOverride(
  client: Etcd3,
  prefix: string,
  o: LimitOverride,
  ttlMs?: number,
): Promise<void> {
  const key = `${limitsPrefix(prefix)}${OVERRIDES}${o.key}`;
  if (ttlMs === undefined) {
    await client.put(key).value(JSON.stringify(o));
    return;
  }
  // A second of slack: servers stop applying it at expiresAt on their clock; the lease only cleans up.
  const lease = client.lease(Math.ceil(ttlMs / 1000) + 1, { autoKeepAlive: false });
  try {
    await lease.put(key).value(JSON.stringify(o));
  } finally {
    lease.release();
  }
}

/** Removes an override; false when there was none at `key`. */
export async function deleteOverride(client: Etcd3, prefix: string, key: string): Promise<boolean> {
  const res = await client
    .delete()
    .key(`${limitsPrefix(prefix)}${OVERRIDES}${key}`)
    .exec();
  return Number(res.deleted) > 0;
}
