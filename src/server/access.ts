import { createHash } from "node:crypto";
import { parseAllDocuments } from "yaml";
import { keyDomain } from "../config/key.js";
import type { ConfigSource, LimitConfig } from "../config/types.js";
import { PermissionDeniedError, UnauthenticatedError } from "../core/errors.js";
import { ErrorCode, itemError } from "../protocol/item-errors.js";
import type {
  CheckRequest,
  CheckResponse,
  CheckResult,
  Limits,
  LimitsRequest,
} from "../protocol/messages.js";
import type { Action, AuthPolicy, Roles } from "../security/auth-file.js";
import {
  ANONYMOUS_IDENTITY,
  type CallView,
  certificateNames,
  type Identity,
  IdentityError,
  identify,
} from "../security/identity.js";
import type { ReportCaller } from "./limiter.js";

/**
 * Who may call what: every gRPC method asks `admit` first (server/grpc.ts), and the methods that
 * name domains ask again per item. Without an authorisation file everything is allowed, as before.
 * A refusal is a `PermissionDeniedError` naming the method, the identity and (per domain) the
 * domain, counted in `shardlimit_denied_total{method,reason}`; it happens before anything changes.
 */

/** What each method needs: a role, or a gateway's action in (some) domain, or a backend's pool. */
type Need = { member: true } | { action: Action } | { view: true } | { pool: true };

export const METHOD_NEEDS: Readonly<Record<string, Need>> = {
  ReportAndGetPolicy: { action: "report" },
  // Envoy's RLQS stream reports usage like a gateway (server/grpc.ts admits it at its start).
  StreamRateLimitQuotas: { action: "report" },
  Check: { action: "check" },
  ShouldRateLimit: { action: "check" },
  Acquire: { action: "check" },
  Settle: { action: "settle" },
  Release: { action: "settle" },
  GetLimits: { action: "limits" },
  // The assignment: gateways route with it, members guard their leases with it.
  GetClusterView: { view: true },
  // A backend's load: a shedding lever over every limit of its pool, so only the identities the
  // file names as that pool's backends (`backends:`), and operators, may report it.
  ReportPool: { pool: true },
  Forward: { member: true },
  Handoff: { member: true },
  Reclaim: { member: true },
  Replicate: { member: true },
  Standby: { member: true },
  // Inspect asked of a member and passed to the key's owner (RateLimiter.Inspect is operators').
  "Peer.Inspect": { member: true },
};

/** Why a call was refused: the `reason` label (bounded: no identities, no domains). */
export type DenyReason =
  | "unauthenticated"
  | "not_member"
  | "no_grant"
  | "domain"
  | "not_taker"
  | "anonymous_limits"
  | "sender"
  | "pool";

export interface AccessDeps {
  /** The authorisation file in force; undefined: none given (everything allowed). */
  policy: () => AuthPolicy | undefined;
  /** `--limits-read authenticated`: GetLimits refuses anonymous callers. */
  limitsRead?: "anyone" | "authenticated";
  denied?: (method: string, reason: DenyReason) => void;
}

/** An admitted caller: its identity and what the file says it may do. */
export interface Caller {
  readonly identity: Identity;
  readonly roles: Roles;
}

export class Access {
  constructor(private readonly deps: AccessDeps) {}

  /**
   * The caller of `method`, refused whole when its role does not allow the method at all.
   * Undefined when no file is in force (everything allowed; callers are not recorded).
   */
  admit(method: string, view: CallView): Caller | undefined {
    const policy = this.deps.policy();
    if (policy === undefined) {
      if (method === "GetLimits" && this.deps.limitsRead === "authenticated") {
        // No file: only a certificate proves anyone (tokens are the file's, and ignored).
        const names = view.certificate === undefined ? [] : certificateNames(view.certificate);
        if (names.length === 0)
          this.deny(method, "anonymous_limits", ANONYMOUS_IDENTITY, " (--limits-read authenticated)");
      }
      return undefined;
    }
    const identity = identifyOrThrow(this, method, view, policy.tokens);
    const roles = policy.rolesOf(identity.name);
    const need = METHOD_NEEDS[method];
    if (roles.operator) return { identity, roles };
    // A method not in the table (a new one nobody gave a rule) is for operators only.
    if (need === undefined) this.deny(method, "no_grant", identity, ": only operators may call it");
    else if ("member" in need) {
      if (!roles.member)
        this.deny(method, "not_member", identity, ": only cluster members may call the peer service");
    } else if ("view" in need) {
      if (
        !(
          roles.member ||
          roles.backend ||
          roles.mayAny("report") ||
          roles.mayAny("check") ||
          roles.mayAny("limits")
        )
      )
        this.deny(method, "no_grant", identity, ": it is no member, gateway, backend or operator");
    } else if ("pool" in need) {
      if (!roles.backend)
        this.deny(
          method,
          "no_grant",
          identity,
          ": it is the backend of no pool (backends: in the auth file)",
        );
    } else if (!roles.mayAny(need.action)) {
      this.deny(method, "no_grant", identity, `: it may ${need.action} in no domain`);
    }
    if (method === "GetLimits" && identity.via === "anonymous" && this.deps.limitsRead === "authenticated")
      this.deny(method, "anonymous_limits", identity, " (--limits-read authenticated)");
    return { identity, roles };
  }

  /** Refuses `method` for `domain` unless the caller may do `action` there. */
  domain(method: string, caller: Caller | undefined, action: Action, domain: string): void {
    if (caller === undefined || caller.roles.may(action, domain)) return;
    this.deny(method, "domain", caller.identity, ` for domain ${JSON.stringify(domain)}`);
  }

  /** Refuses a pool report unless the caller is a backend of `pool` (or an operator). */
  pool(method: string, caller: Caller | undefined, pool: string): void {
    if (caller === undefined || caller.roles.mayReportPool(pool)) return;
    this.deny(method, "pool", caller.identity, ` for pool ${JSON.stringify(pool.slice(0, 100))}`);
  }

  /**
   * A peer call naming its sender's member id (`from`): an identity the file maps to member ids
   * (`member_id`) may speak only as one of them; operators and unmapped members as any.
   */
  memberId(method: string, caller: Caller | undefined, from: string): void {
    const ids = caller?.roles.memberIds;
    if (caller === undefined || caller.roles.operator || ids === undefined || ids.includes(from)) return;
    this.deny(
      method,
      "sender",
      caller.identity,
      `: it is member ${ids.map((i) => JSON.stringify(i)).join(" or ")}, not ${JSON.stringify(from.slice(0, 128))}`,
    );
  }

  /** `domain` for a key (its domain is the part before the first `/`); an empty key passes. */
  keyDomain(method: string, caller: Caller | undefined, action: Action, key: string): void {
    if (caller !== undefined && key !== "") this.domain(method, caller, action, keyDomain(key));
  }

  /**
   * A Check under the file: items of domains the caller may not check get PERMISSION_DENIED in
   * their place and reach nothing (the rest are decided by `decide`); an atomic check with such an
   * item, or one whose every item is refused, is refused whole. The caller is recorded on the
   * request (the taker of its tickets).
   */
  check(
    caller: Caller | undefined,
    req: CheckRequest,
    decide: (req: CheckRequest) => CheckResponse | Promise<CheckResponse>,
  ): CheckResponse | Promise<CheckResponse> {
    if (caller === undefined) {
      if (req.caller !== undefined) delete req.caller;
      return decide(req);
    }
    req.caller = caller.identity.name;
    const refused: number[] = [];
    const domains = new Set<string>();
    for (let i = 0; i < req.items.length; i++) {
      const d = keyDomain(req.items[i]!.key);
      if (!caller.roles.may("check", d)) {
        refused.push(i);
        domains.add(d);
      }
    }
    if (refused.length === 0) return decide(req);
    const named = [...domains]
      .slice(0, 5)
      .map((d) => JSON.stringify(d))
      .join(", ");
    if (req.atomic || refused.length === req.items.length)
      this.deny("Check", "domain", caller.identity, ` for domain ${named}`);
    this.count("Check", "domain");
    const keep: number[] = [];
    const out = new Set(refused);
    for (let i = 0; i < req.items.length; i++) if (!out.has(i)) keep.push(i);
    const sub: CheckRequest = { ...req, items: keep.map((i) => req.items[i]!) };
    const merge = (res: CheckResponse): CheckResponse => {
      const results: CheckResult[] = new Array(req.items.length);
      for (let j = 0; j < keep.length; j++) results[keep[j]!] = res.results[j]!;
      for (const i of refused) {
        results[i] = {
          error: itemError(
            ErrorCode.PERMISSION_DENIED,
            `Check refused for identity ${JSON.stringify(caller.identity.name)} for domain ${JSON.stringify(keyDomain(req.items[i]!.key))}`,
          ),
        };
      }
      return { ...res, results };
    };
    const res = decide(sub);
    return res instanceof Promise ? res.then(merge) : merge(res);
  }

  /**
   * A report under the file: `run` gets whether the caller may report for a domain (the limiter
   * refuses the entries of other domains, or the whole report when all are); a report with such
   * entries is counted once as a refusal.
   */
  report<T>(caller: Caller | undefined, run: (caller?: ReportCaller) => T | Promise<T>): T | Promise<T> {
    if (caller === undefined) return run();
    let refused = false;
    const may: ReportCaller = {
      identity: caller.identity.name,
      may: (domain) => {
        const ok = caller.roles.may("report", domain);
        if (!ok) refused = true;
        return ok;
      },
    };
    const counted = () => {
      if (refused) this.count("ReportAndGetPolicy", "domain");
    };
    let out: T | Promise<T>;
    try {
      out = run(may);
    } catch (err) {
      counted();
      throw err;
    }
    if (!(out instanceof Promise)) {
      counted();
      return out;
    }
    return out.finally(counted);
  }

  /**
   * GetLimits under the file: operators read every source; a gateway the documents (one domain
   * each) of the domains it may read limits of, so it learns nothing of other tenants' limits.
   * What it reads has a version of its own (the config's and a digest of what it reads), so a
   * grant added to the file reaches it at its next poll although the config did not change.
   */
  limits(caller: Caller | undefined, config: LimitConfig, req: LimitsRequest, limits: Limits): Limits {
    if (caller === undefined || caller.roles.operator || limits.unchanged) return limits;
    const sources: { file: string; text: string }[] = [];
    let whole = true;
    for (const s of config.sources) {
      const docs = documentsOf(s);
      const kept = docs.filter((d) => d.domain !== undefined && caller.roles.may("limits", d.domain));
      if (kept.length === docs.length) sources.push({ file: s.file, text: s.text });
      else {
        whole = false;
        if (kept.length > 0) sources.push({ file: s.file, text: kept.map((d) => d.text).join("\n---\n") });
      }
    }
    if (whole) return limits;
    const h = createHash("sha256").update(config.version);
    for (const s of sources) h.update("\0").update(s.file).update("\0").update(s.text);
    const version = `${config.version}/${h.digest("hex").slice(0, 16)}`;
    if (req.knownVersion === version) return { version, sources: [], unchanged: true };
    return { version, sources, unchanged: false };
  }

  /** Counts and throws a refusal naming the method, the identity and what was refused. */
  deny(method: string, reason: DenyReason, identity: Identity, what: string): never {
    this.count(method, reason);
    throw new PermissionDeniedError(`${method} refused for identity ${JSON.stringify(identity.name)}${what}`);
  }

  count(method: string, reason: DenyReason): void {
    this.deps.denied?.(method, reason);
  }
}

function identifyOrThrow(
  access: Access,
  method: string,
  view: CallView,
  tokens: ReadonlyMap<string, Buffer>,
): Identity {
  try {
    return identify(view, tokens);
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err;
    access.count(method, "unauthenticated");
    throw new UnauthenticatedError(`${method} refused: ${err.message}`);
  }
}

/** A config source's documents with their `domain`, parsed once per source. */
const sourceDocs = new WeakMap<ConfigSource, { domain: string | undefined; text: string }[]>();
function documentsOf(s: ConfigSource): { domain: string | undefined; text: string }[] {
  let docs = sourceDocs.get(s);
  if (docs === undefined) {
    docs = parseAllDocuments(s.text).map((doc) => {
      const d = (doc.toJS() as { domain?: unknown } | null)?.domain;
      return { domain: typeof d === "string" ? d : undefined, text: doc.toString() };
    });
    sourceDocs.set(s, docs);
  }
  return docs;
}
