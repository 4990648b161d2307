import type { Etcd3 } from "etcd3";
import type { Clock } from "../core/clock.js";
import { Assigner } from "./assigner.js";
import type { AssignmentView } from "./assignment-view.js";
import { Leadership } from "./leadership.js";
import { LoadView, sliceLoads } from "./load.js";
import type { Log } from "./log.js";
import type { Membership } from "./membership.js";

export interface AssignerStackOptions {
  client: Etcd3;
  prefix: string;
  /** The candidate's id: the leader key's value while it leads. */
  id: string;
  /** Whose lease the leader key is bound to: leadership ends with it. */
  membership: Membership;
  /** The stored assignment; its owner must call `assigner.kick()` when it changes. */
  view: AssignmentView;
  clock: Clock;
  log: Log;
  /** How often servers publish load: records older than three of these are ignored. */
  loadIntervalMs: number;
  rebalanceIntervalMs: number;
}

/**
 * The assigner with what it needs around it: leader election (the leader key bound to the
 * candidate's lease) and the members' published load. A server embeds one; `shardlimit assigner`
 * runs one on its own.
 */
export class AssignerStack {
  readonly leadership: Leadership;
  readonly assigner: Assigner;
  private readonly loads: LoadView;

  constructor(o: AssignerStackOptions) {
    let assigner: Assigner | undefined;
    this.leadership = new Leadership({
      client: o.client,
      key: `${o.prefix}assigner/leader`,
      id: o.id,
      membership: o.membership,
      clock: o.clock,
      log: o.log,
      onChange: () => assigner?.kick(),
    });
    const loads = new LoadView({ client: o.client, prefix: o.prefix, clock: o.clock, log: o.log });
    this.loads = loads;
    assigner = new Assigner({
      prefix: o.prefix,
      view: o.view,
      leadership: this.leadership,
      clock: o.clock,
      log: o.log,
      rebalanceIntervalMs: o.rebalanceIntervalMs,
      loads: (a) => {
        const fresh = loads.fresh(o.clock.now(), 3 * o.loadIntervalMs);
        return fresh.length > 0 ? sliceLoads(a, fresh) : undefined;
      },
    });
    this.assigner = assigner;
  }

  /** Starts watching load and campaigning; the caller has started the membership and the view. */
  async start(): Promise<void> {
    await this.loads.start();
    await this.leadership.start();
  }

  async stop(): Promise<void> {
    await this.leadership.stop();
    await this.assigner.stop();
    await this.loads.stop();
  }
}
