import type { Etcd3 } from "etcd3";
import { AssignerStack } from "../cluster/assigner-stack.js";
import { AssignmentView } from "../cluster/assignment-view.js";
import { connectEtcd } from "../cluster/etcd-client.js";
import type { Log } from "../cluster/log.js";
import { Membership, membersPrefix, parseMembers } from "../cluster/membership.js";
import { PrefixView } from "../cluster/prefix-view.js";
import type { Clock } from "../core/clock.js";
import type { EtcdAccess } from "../security/etcd-access.js";

export interface AssignerNodeOptions {
  etcd: string[];
  /** TLS and user/password auth towards etcd (plaintext, no auth when absent). */
  etcdAccess?: EtcdAccess;
  prefix: string;
  id: string;
  leaseTtlSeconds: number;
  loadIntervalMs: number;
  rebalanceIntervalMs: number;
  clock: Clock;
  log: Log;
}

/**
 * `shardlimit assigner`: the assigner on its own, for clusters whose servers run with
 * `--no-assigner`. It campaigns under a lease registered among the assigner candidates
 * (`<prefix>assigners/`), not among the members, so it is never given slices.
 */
export class AssignerNode {
  private readonly client: Etcd3;
  private readonly candidacy: Membership;
  private readonly view: AssignmentView;
  private readonly members: PrefixView;
  readonly stack: AssignerStack;

  constructor(o: AssignerNodeOptions) {
    this.client = connectEtcd(o.etcd, o.etcdAccess);
    let stack: AssignerStack | undefined;
    this.candidacy = new Membership({
      client: this.client,
      prefix: `${o.prefix}assigners/`,
      self: { id: o.id, address: "(assigner)", capacity: 1, startedAt: o.clock.now() },
      ttlSeconds: o.leaseTtlSeconds,
      clock: o.clock,
      log: o.log,
      onMembers: () => {},
    });
    this.view = new AssignmentView({
      client: this.client,
      prefix: o.prefix,
      clock: o.clock,
      log: o.log,
      onChange: () => stack?.assigner.kick(),
    });
    this.members = new PrefixView({
      client: this.client,
      prefix: membersPrefix(o.prefix),
      clock: o.clock,
      log: o.log,
      onChange: (entries) => stack?.assigner.setMembers(parseMembers(entries, o.log)),
    });
    stack = new AssignerStack({
      client: this.client,
      prefix: o.prefix,
      id: o.id,
      membership: this.candidacy,
      view: this.view,
      clock: o.clock,
      log: o.log,
      loadIntervalMs: o.loadIntervalMs,
      rebalanceIntervalMs: o.rebalanceIntervalMs,
    });
    this.stack = stack;
  }

  async start(): Promise<void> {
    await this.candidacy.start();
    await this.view.start();
    await this.members.start();
    await this.stack.start();
  }

  async stop(): Promise<void> {
    await this.stack.stop();
    await this.members.stop();
    await this.view.stop();
    await this.candidacy.stop();
    this.client.close();
  }
}
