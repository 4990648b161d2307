import { type Etcd3, EtcdPermissionDeniedError } from "etcd3";
import { z } from "zod";
import { type LimitOverride, LimitOverrideSchema } from "../config/overrides.js";
import type { ConfigSource } from "../config/types.js";
import { membersPrefix, parseMembers } from "./membership.js";

/**
 * Limits in etcd (`shardlimit limits ...`, servers with `--limits-from etcd`), under the cluster
 * prefix:
 *   <prefix>limits/head               {version, digest, at}: the version in force
 *   <prefix>limits/staged             {version, digest, at}: a pushed version not yet in force
 *   <prefix>limits/versions/<n>       {version, at, comment, sources}: its YAML files, n zero-padded
 *   <prefix>limits/overrides/<key>    a LimitOverride; bound to a lease when it has a TTL
 * A push writes the next version and stages it in one transaction that succeeds only if the head
 * and the staged record are still the ones it read, so two pushes at once cannot both take a
 * number; it deletes the version KEEP_VERSIONS back, so history stays bounded. Servers serving
 * limits from etcd load the staged version and answer in their membership records; one of them
 * then moves the head (`activateStaged`) and all switch on that write (limits-source.ts). With no
 * such server running, the push moves the head itself.
 */

export const KEEP_VERSIONS = 50;

export const LimitsHeadSchema = z.object({
  version: z.number().int().positive(),
  /** The compiled config's version (a digest of its files), as servers report it. */
  digest: z.string(),
  at: z.number().int().nonnegative(),
});
export type LimitsHead = z.infer<typeof LimitsHeadSchema>;
/** The staged record has the head's shape: the version, its digest, when it was pushed. */
export const LimitsStagedSchema = LimitsHeadSchema;

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
const STAGED = "staged";
const VERSIONS = "versions/";
const OVERRIDES = "overrides/";
const versionName = (n: number) => `${VERSIONS}${String(n).padStart(10, "0")}`;

/** What is under `limitsPrefix`, keys relative to it (a PrefixView's entries, or one read). */
export interface LimitsState {
  head: LimitsHead | undefined;
  /** The head's version, when it is there and well-formed. */
  current: LimitsVersion | undefined;
  /** A pushed version waiting for the servers' answers (newer than the head), and its files. */
  staged: { record: LimitsHead; text: string; version: LimitsVersion | undefined } | undefined;
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
  const stagedText = entries.get(STAGED);
  const stagedRecord = stagedText === undefined ? undefined : parse(STAGED, stagedText, LimitsStagedSchema);
  const headName = head && versionName(head.version);
  const stagedName = stagedRecord && versionName(stagedRecord.version);
  for (const [name, text] of entries) {
    if (name.startsWith(VERSIONS) && (opts.history || name === headName || name === stagedName)) {
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
  // Staged and already in force (or superseded by a direct push) is not waiting for anything.
  const staged =
    stagedRecord && stagedText !== undefined && stagedRecord.version > (head?.version ?? 0)
      ? {
          record: stagedRecord,
          text: stagedText,
          version: versions.find((v) => v.version === stagedRecord.version),
        }
      : undefined;
  if (!opts.history) {
    const keep = versions.filter((v) => v.version === head?.version);
    versions.length = 0;
    versions.push(...keep);
  }
  return { head, current, staged, versions, overrides, problems };
}

export async function readLimits(client: Etcd3, prefix: string): Promise<LimitsState> {
  const p = limitsPrefix(prefix);
  const res = await client.getAll().prefix(p).exec();
  return limitsState(new Map(res.kvs.map((kv) => [kv.key.toString().slice(p.length), kv.value.toString()])));
}

/** What a push did: the version it took, and whether it is in force already or staged. */
export interface PushResult extends LimitsHead {
  staged: boolean;
}

/**
 * Writes `sources` as the next version, atomically; retried when another push moved the head or
 * the staged record in between. The version is staged for the servers serving limits from etcd to
 * load and switch to together; with none registered it is made the head at once.
 */
export async function pushLimits(
  client: Etcd3,
  prefix: string,
  v: { digest: string; sources: readonly ConfigSource[]; comment: string; at: number },
): Promise<PushResult> {
  const p = limitsPrefix(prefix);
  for (let attempt = 0; attempt < 10; attempt++) {
    const [got, staged, switching] = await Promise.all([
      client.get(`${p}${HEAD}`).exec(),
      client.get(`${p}${STAGED}`).exec(),
      etcdLimitsMembers(client, prefix),
    ]).catch((err: Error) => {
      throw refusal(
        err,
        `read permission on the prefixes ${p} and ${membersPrefix(prefix)}`,
        "nothing was pushed",
      );
    });
    const kv = got.kvs[0];
    const stagedKv = staged.kvs[0];
    const prev = kv ? LimitsHeadSchema.safeParse(JSON.parse(kv.value.toString())) : undefined;
    if (prev && !prev.success) throw new Error(`${p}${HEAD} is malformed; fix or delete it`);
    const prevStaged = stagedKv
      ? LimitsStagedSchema.safeParse(safeJson(stagedKv.value.toString()))
      : undefined;
    // A malformed staged record is replaced; its number is not reused only when it could be read.
    const version = Math.max(prev?.data.version ?? 0, prevStaged?.success ? prevStaged.data.version : 0) + 1;
    const head: LimitsHead = { version, digest: v.digest, at: v.at };
    const record: LimitsVersion = {
      version,
      digest: v.digest,
      at: v.at,
      comment: v.comment,
      sources: [...v.sources],
    };
    // Only servers that answer staged versions switch them on; with none, the push is the switch.
    const now = !switching.some((m) => m.limits?.staging === true);
    const ops: (ReturnType<Etcd3["put"]> | ReturnType<ReturnType<Etcd3["delete"]>["key"]>)[] = [
      client.put(`${p}${versionName(version)}`).value(JSON.stringify(record)),
      client.put(`${p}${now ? HEAD : STAGED}`).value(JSON.stringify(head)),
    ];
    if (now && stagedKv) ops.push(client.delete().key(`${p}${STAGED}`));
    if (version > KEEP_VERSIONS) ops.push(client.delete().key(`${p}${versionName(version - KEEP_VERSIONS)}`));
    const res = await client
      .if(`${p}${HEAD}`, "Mod", "==", kv ? kv.mod_revision : 0)
      .and(`${p}${STAGED}`, "Mod", "==", stagedKv ? stagedKv.mod_revision : 0)
      .then(...ops)
      .commit()
      .catch((err: Error) => {
        if (isDenied(err)) throw refusal(err, `write permission on the prefix ${p}`, "nothing was pushed");
        if (!/request is too large|RESOURCE_EXHAUSTED|larger than max/i.test(err.message)) throw err;
        const bytes = Buffer.byteLength(JSON.stringify(record));
        throw new Error(
          `version ${version} is ${bytes} bytes as stored, more than etcd takes in one request (its --max-request-bytes, 1.5 MiB by default); nothing was pushed`,
        );
      });
    if (res.succeeded) return { ...head, staged: !now };
  }
  throw new Error("another push kept moving the head; try again");
}

/** Registered members serving limits from etcd, sorted by id (`limits.staging`: they answer staged versions). */
export async function etcdLimitsMembers(client: Etcd3, prefix: string) {
  const mp = membersPrefix(prefix);
  const res = await client.getAll().prefix(mp).exec();
  const entries = new Map(res.kvs.map((kv) => [kv.key.toString().slice(mp.length), kv.value.toString()]));
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  return parseMembers(entries, quiet).filter((m) => (m.limits?.version ?? 0) > 0);
}

/**
 * Makes the staged version the head, in one transaction that succeeds only if the staged record
 * is still `stagedText` and the head still `headText` (absent: undefined): false when either moved.
 */
export async function activateStaged(
  client: Etcd3,
  prefix: string,
  stagedText: string,
  headText: string | undefined,
): Promise<boolean> {
  const p = limitsPrefix(prefix);
  const txn = client.if(`${p}${STAGED}`, "Value", "==", stagedText);
  const guarded =
    headText === undefined
      ? txn.and(`${p}${HEAD}`, "Create", "==", 0)
      : txn.and(`${p}${HEAD}`, "Value", "==", headText);
  const res = await guarded
    .then(client.put(`${p}${HEAD}`).value(stagedText), client.delete().key(`${p}${STAGED}`))
    .commit();
  return res.succeeded;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Stores an override; with `ttlMs`, bound to a lease etcd deletes it with (servers also check `expiresAt`). */
export async function putOverride(
  client: Etcd3,
  prefix: string,
  o: LimitOverride,
  ttlMs?: number,
): Promise<void> {
  const key = `${limitsPrefix(prefix)}${OVERRIDES}${o.key}`;
  const denied = (err: Error) => {
    throw refusal(err, `write permission on the prefix ${limitsPrefix(prefix)}`, "nothing was set");
  };
  if (ttlMs === undefined) {
    await client.put(key).value(JSON.stringify(o)).catch(denied);
    return;
  }
  // A second of slack: servers stop applying it at expiresAt on their clock; the lease only cleans up.
  const lease = client.lease(Math.ceil(ttlMs / 1000) + 1, { autoKeepAlive: false });
  try {
    await lease.put(key).value(JSON.stringify(o)).catch(denied);
  } finally {
    lease.release();
  }
}

function isDenied(err: Error): boolean {
  return err instanceof EtcdPermissionDeniedError || /permission denied/i.test(err.message);
}

/**
 * etcd's "permission denied" as what the etcd user lacks (README "Limits in etcd": the roles of
 * servers and operators); other errors unchanged.
 */
function refusal(err: Error, needs: string, outcome: string): Error {
  if (!isDenied(err)) return err;
  return new Error(
    `etcd refused it (permission denied): the etcd user needs ${needs}, as the operators' role of README "Limits in etcd" has; ${outcome}`,
  );
}

/** Removes an override; false when there was none at `key`. */
export async function deleteOverride(client: Etcd3, prefix: string, key: string): Promise<boolean> {
  const res = await client
    .delete()
    .key(`${limitsPrefix(prefix)}${OVERRIDES}${key}`)
    .exec()
    .catch((err: Error) => {
      throw refusal(err, `write permission on the prefix ${limitsPrefix(prefix)}`, "nothing was unset");
    });
  return Number(res.deleted) > 0;
}
