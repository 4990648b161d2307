import { readFileSync } from "node:fs";
import { isNode, LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { ConfigError, type ConfigProblem } from "../config/errors.js";

/**
 * The authorisation file (`--auth-file`): who may call what. YAML, validated with zod; every
 * problem names the path of the bad field and its line. See examples/auth.yaml.
 *
 * ```yaml
 * tokens:                    # identities that send `authorization: Bearer <token>`
 *   gw-checkout: 5e88...     # name: SHA-256 of the token, hex (the token itself is not stored)
 * members:                   # servers of the cluster: the only callers of Peer.*
 *   - identity: server-*     # exact name, or a glob (`*` matches any characters)
 *     member_id: ...         # optional: the --id this identity acts as (a handoff's sender)
 * gateways:                  # report, check, settle and read limits, per domain
 *   - identity: gw-checkout
 *     domains: [checkout]    # names or globs; "*" is every domain
 *     may: [report, check, settle, limits]   # default: all four
 * backends:                  # report their pool's load (ReportPool), per pool
 *   - identity: gpu-node-*
 *     pools: [gpu]           # names or globs; "*" is every pool
 * operators:                 # everything
 *   - identity: spiffe://prod/ns/ops/*
 * ```
 */

/** What a gateway may do in a domain: the methods of each are in `ACTION_OF` (access.ts). */
export const ACTIONS = ["report", "check", "settle", "limits"] as const;
export type Action = (typeof ACTIONS)[number];

const HEX_SHA256 = /^[0-9a-f]{64}$/;
const NAME = z
  .string({ error: (iss) => (iss.input === undefined ? "is missing" : "must be a string") })
  .min(1, "must not be empty")
  .max(512, "is longer than 512 characters")
  .refine((s) => !/\s/.test(s), "must not contain spaces");

const Member = z.strictObject({
  identity: NAME,
  member_id: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, '.', '_' or '-' (a --id)")
    .optional(),
});
const Gateway = z.strictObject({
  identity: NAME,
  domains: z.array(NAME).min(1, 'names no domain (use ["*"] for every domain)'),
  may: z
    .array(z.enum(ACTIONS, { error: `must be one of ${ACTIONS.join(", ")}` }))
    .min(1, "is empty: leave it out for all of report, check, settle, limits")
    .optional(),
});
const Operator = z.strictObject({ identity: NAME });
const Backend = z.strictObject({
  identity: NAME,
  pools: z.array(NAME).min(1, 'names no pool (use ["*"] for every pool)'),
});

export const AuthFileSchema = z.strictObject({
  tokens: z
    .record(
      NAME.refine(
        (n) => n !== "anonymous",
        "is the name of callers with no credentials: name the token otherwise",
      ),
      z
        .string()
        .transform((s) => s.toLowerCase())
        .refine((s) => HEX_SHA256.test(s), "must be the token's SHA-256 as 64 hex digits, not the token"),
    )
    .default({}),
  members: z.array(Member).default([]),
  gateways: z.array(Gateway).default([]),
  operators: z.array(Operator).default([]),
  backends: z.array(Backend).default([]),
});
export type AuthFileSpec = z.infer<typeof AuthFileSchema>;

/** The name of a caller that sent no certificate and no token. The file may grant it things. */
export const ANONYMOUS = "anonymous";

/** Exact names, or globs with `*` for any run of characters (`spiffe://prod/ns/gw/*`). */
export function matcher(pattern: string): (name: string) => boolean {
  if (!pattern.includes("*")) return (name) => name === pattern;
  const re = new RegExp(`^${pattern.split("*").map(escapeRegExp).join(".*")}$`, "s");
  return (name) => re.test(name);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

interface GatewayGrant {
  readonly identity: (name: string) => boolean;
  readonly domains: readonly ((domain: string) => boolean)[];
  readonly may: ReadonlySet<Action>;
}

/** What one identity is, by the file: the answers the checks need, computed once per identity. */
export interface Roles {
  readonly member: boolean;
  /** The member ids this identity may act as (undefined: any; it names itself in requests). */
  readonly memberIds: readonly string[] | undefined;
  readonly operator: boolean;
  /** Whether it may do `action` in `domain` (operators: always). */
  may(action: Action, domain: string): boolean;
  /** Whether it may do `action` in some domain (a method is refused whole when not). */
  mayAny(action: Action): boolean;
  /** Whether it may report the load of pool `pool` (ReportPool; operators: always). */
  mayReportPool(pool: string): boolean;
  /** Whether it is a backend of some pool (or an operator). */
  readonly backend: boolean;
}

/** The authorisation file compiled: token digests, and the role entries as matchers. */
export class AuthPolicy {
  /** Token digests (hex SHA-256) by identity name. */
  readonly tokens: ReadonlyMap<string, Buffer>;
  private readonly members: readonly { identity: (n: string) => boolean; memberId?: string }[];
  private readonly gateways: readonly GatewayGrant[];
  private readonly operators: readonly ((n: string) => boolean)[];
  private readonly backends: readonly {
    identity: (n: string) => boolean;
    pools: ((p: string) => boolean)[];
  }[];
  /** Roles by identity name: a bounded cache (names come from the file or from certificates). */
  private readonly roles = new Map<string, Roles>();

  constructor(
    readonly spec: AuthFileSpec,
    /** Where it was read from, for messages. */
    readonly file: string,
  ) {
    this.tokens = new Map(Object.entries(spec.tokens).map(([name, hex]) => [name, Buffer.from(hex, "hex")]));
    this.members = spec.members.map((m) => ({ identity: matcher(m.identity), memberId: m.member_id }));
    this.gateways = spec.gateways.map((g) => ({
      identity: matcher(g.identity),
      domains: g.domains.map(matcher),
      may: new Set(g.may ?? ACTIONS),
    }));
    this.operators = spec.operators.map((o) => matcher(o.identity));
    this.backends = spec.backends.map((b) => ({
      identity: matcher(b.identity),
      pools: b.pools.map(matcher),
    }));
  }

  rolesOf(name: string): Roles {
    let r = this.roles.get(name);
    if (r === undefined) {
      r = this.compute(name);
      if (this.roles.size >= 10_000) this.roles.clear();
      this.roles.set(name, r);
    }
    return r;
  }

  private compute(name: string): Roles {
    const members = this.members.filter((m) => m.identity(name));
    const ids = members.map((m) => m.memberId);
    const operator = this.operators.some((o) => o(name));
    const grants = this.gateways.filter((g) => g.identity(name));
    const pools = this.backends.filter((b) => b.identity(name)).flatMap((b) => b.pools);
    const cache = new Map<string, boolean>();
    return {
      member: members.length > 0,
      memberIds: members.length === 0 || ids.includes(undefined) ? undefined : (ids as string[]),
      operator,
      may: (action, domain) => {
        if (operator) return true;
        const k = `${action}\0${domain}`;
        let ok = cache.get(k);
        if (ok === undefined) {
          ok = grants.some((g) => g.may.has(action) && g.domains.some((d) => d(domain)));
          if (cache.size < 1000) cache.set(k, ok);
        }
        return ok;
      },
      mayAny: (action) => operator || grants.some((g) => g.may.has(action)),
      mayReportPool: (pool) => operator || pools.some((p) => p(pool)),
      backend: operator || pools.length > 0,
    };
  }
}

/** Parses and validates an authorisation file's text; a `ConfigError` lists every problem. */
export function parseAuthFile(file: string, text: string): AuthPolicy {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const problems: ConfigProblem[] = doc.errors.map((err) => ({
    file,
    path: "",
    line: lines.linePos(err.pos[0]).line,
    message: `invalid YAML: ${err.message}`,
  }));
  if (problems.length > 0) throw new ConfigError(problems);
  const value: unknown = doc.toJS() ?? {};
  const parsed = AuthFileSchema.safeParse(value);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      // The line of the field, or of the nearest enclosing one that is there (a missing field).
      let at: number | undefined;
      for (let n = issue.path.length; n >= 0 && at === undefined; n--) {
        const node = doc.getIn(issue.path.slice(0, n).map(String), true);
        if (isNode(node) && node.range) at = lines.linePos(node.range[0]).line;
      }
      problems.push({
        file,
        path: formatPath(issue.path),
        ...(at !== undefined ? { line: at } : {}),
        message: issue.message,
      });
    }
    throw new ConfigError(problems);
  }
  return new AuthPolicy(parsed.data, file);
}

/** Token identities that no role entry matches: they authenticate, then may do nothing. */
export function tokenNamesUnused(spec: AuthFileSpec): string[] {
  const patterns = [...spec.members, ...spec.gateways, ...spec.operators, ...spec.backends].map((e) =>
    matcher(e.identity),
  );
  return Object.keys(spec.tokens).filter((name) => !patterns.some((p) => p(name)));
}

/** `gateways[0].domains[1]`, as a platform engineer reads a YAML path. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out === "" ? String(p) : `.${String(p)}`;
  return out;
}

/** Reads and parses the file at `path`. */
export function loadAuthFile(path: string): AuthPolicy {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError([{ file: path, path: "", message: `cannot read: ${(err as Error).message}` }]);
  }
  return parseAuthFile(path, text);
}
