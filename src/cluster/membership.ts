import type { Etcd3, Lease } from "etcd3";
import { z } from "zod";
import type { Clock } from "../core/clock.js";
import type { Log } from "./log.js";
import { PrefixView } from "./prefix-view.js";

/** What a server publishes about itself under `<prefix>members/<id>`. */
export const MemberRecordSchema = z.object({
  id: z.string().min(1).max(256),
  /** host:port where gateways and other servers reach its gRPC endpoint. */
  address: z.string().min(1).max(512),
  /** Relative capacity (1 = a standard server), for placing load. */
  capacity: z.number().positive().max(1000),
  startedAt: z.number().int().nonnegative(),
  /** Set when the server is leaving (SIGTERM): place nothing on it, let it hand its slices over. */
  draining: z.boolean().optional(),
  /**
   * The limits it serves: `version` as pushed to etcd (0 when read from files), `digest` the
   * config's version, a pushed version it could not load (it keeps serving the old one), and its
   * answer to a staged version: loaded and ready to switch, or the error that stops it (`staging`:
   * it answers staged versions at all).
   */
  limits: z
    .object({
      version: z.number().int().nonnegative(),
      digest: z.string().max(64),
      refused: z.object({ version: z.number().int().nonnegative(), error: z.string().max(4000) }).optional(),
      staged: z
        .object({ version: z.number().int().positive(), error: z.string().max(4000).optional() })
        .optional(),
      /** It answers staged versions (servers of an older version switch on the head only). */
      staging: z.literal(true).optional(),
    })
    .optional(),
});
export type MemberRecord = z.infer<typeof MemberRecordSchema>;

export interface MembershipOptions {
  client: Etcd3;
  /** Key prefix of the cluster, e.g. `/shardlimit/`. */
  prefix: string;
  self: MemberRecord;
  /** Lease TTL in seconds: a crashed server's registration vanishes this long after its last keepalive. */
  ttlSeconds: number;
  clock: Clock;
  log: Log;
  /** Called with every member (sorted by id) whenever the set changes. */
  onMembers: (members: MemberRecord[]) => void;
}

export function membersPrefix(prefix: string): string {
  return `${prefix}members/`;
}

/**
 * This server's registration (a key bound to a lease it keeps alive) and its view of everyone's.
 * etcd3 declares a lease lost only after about twice its TTL without a keepalive, so the time of
 * the last successful keepalive is tracked here: `registrationFresh` tells whether this server may
 * still be registered, which the assigner uses to step down before its lease could have expired.
 */
export class Membership {
  private lease: Lease | undefined;
  private readonly view: PrefixView;
  private lastKeepaliveAt = Number.NEGATIVE_INFINITY;
  private stopped = false;
  private reRegistering = false;
  private members: MemberRecord[] = [];

  constructor(private readonly opts: MembershipOptions) {
    MemberRecordSchema.parse(opts.self);
    this.view = new PrefixView({
      client: opts.client,
      prefix: membersPrefix(opts.prefix),
      clock: opts.clock,
      log: opts.log,
      onChange: (entries) => this.onEntries(entries),
    });
  }

  get current(): readonly MemberRecord[] {
    return this.members;
  }

  /** The lease id of this server's registration (also used for leadership), once granted. */
  async leaseId(): Promise<string> {
    if (!this.lease) throw new Error("membership not started");
    return this.lease.grant();
  }

  currentLease(): Lease | undefined {
    return this.lease;
  }

  /** True while the last keepalive is younger than the TTL: the registration surely still exists. */
  registrationFresh(now = this.opts.clock.elapsed()): boolean {
    return now - this.lastKeepaliveAt < this.opts.ttlSeconds * 1000;
  }

  async start(): Promise<void> {
    await this.register();
    await this.view.start();
  }

  /**
   * Grants a lease and puts the record under it. The lease becomes this server's only once the put
   * succeeded, so a lease that failed to register cannot start another round of re-registering.
   */
  private async register(): Promise<void> {
    const { client, ttlSeconds, self, log } = this.opts;
    const lease = client.lease(ttlSeconds, { autoKeepAlive: true });
    lease.on("keepaliveSucceeded", () => {
      if (this.lease === lease) this.lastKeepaliveAt = this.opts.clock.elapsed();
    });
    lease.on("lost", (err) => {
      if (this.stopped || this.lease !== lease) return;
      log.warn({ err: err.message }, "membership lease lost; registering again");
      this.reRegister();
    });
    try {
      await lease.put(`${membersPrefix(this.opts.prefix)}${self.id}`).value(JSON.stringify(self));
    } catch (err) {
      lease.release();
      throw err;
    }
    this.lease = lease;
    this.lastKeepaliveAt = this.opts.clock.elapsed();
    log.info({ id: self.id, address: self.address, ttlSeconds }, "registered as a cluster member");
  }

  /** Puts `value` at `key` bound to this server's lease, so it vanishes with the server. */
  async putLeased(key: string, value: string): Promise<void> {
    if (!this.lease) throw new Error("membership not started");
    await this.lease.put(key).value(value);
  }

  /**
   * Marks this server as leaving, in place (same key, same lease): the assigner then moves its
   * slices away while it is still here to hand their counters over.
   */
  async setDraining(): Promise<void> {
    if (!this.lease) throw new Error("membership not started");
    this.opts.self = { ...this.opts.self, draining: true };
    await this.lease
      .put(`${membersPrefix(this.opts.prefix)}${this.opts.self.id}`)
      .value(JSON.stringify(this.opts.self));
  }

  /** Changes this server's published limits (same key, same lease); before `start`, only the record. */
  async setLimits(limits: MemberRecord["limits"]): Promise<void> {
    this.opts.self = { ...this.opts.self, limits };
    if (!this.lease) return;
    await this.lease
      .put(`${membersPrefix(this.opts.prefix)}${this.opts.self.id}`)
      .value(JSON.stringify(this.opts.self));
  }

  /** One retry loop at a time, backing off from 100 ms to 2 s; logs the first failure and every 10th. */
  private reRegister(): void {
    if (this.reRegistering || this.stopped) return;
    this.reRegistering = true;
    let delay = 100;
    let failures = 0;
    const attempt = () => {
      if (this.stopped) {
        this.reRegistering = false;
        return;
      }
      this.register().then(
        () => {
          this.reRegistering = false;
        },
        (err: Error) => {
          if (failures++ % 10 === 0) {
            this.opts.log.warn({ err: err.message, failures }, "cannot register with etcd; retrying");
          }
          this.opts.clock.after(delay, attempt);
          delay = Math.min(2000, delay * 2);
        },
      );
    };
    attempt();
  }

  private onEntries(entries: ReadonlyMap<string, string>): void {
    this.members = parseMembers(entries, this.opts.log);
    this.opts.onMembers(this.members);
  }

  /** A planned leave: the registration is revoked at once, so others need not wait for the TTL. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.view.stop();
    await this.lease?.revoke().catch(() => {});
  }
}

/** Member records from etcd entries (key: member id), sorted by id; malformed ones left out. */
export function parseMembers(entries: ReadonlyMap<string, string>, log: Log): MemberRecord[] {
  const members: MemberRecord[] = [];
  for (const [key, value] of entries) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      parsed = undefined;
    }
    const r = MemberRecordSchema.safeParse(parsed);
    if (r.success && r.data.id === key) members.push(r.data);
    else log.warn({ key }, "ignoring a malformed member record");
  }
  members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return members;
}
