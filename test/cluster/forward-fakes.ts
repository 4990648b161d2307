import type { LimitConfig } from "../../src/config/types.js";
import type { ManualClock } from "../../src/core/clock.js";
import { Engine } from "../../src/core/engine.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { EnvoyRateLimit } from "../../src/server/envoy.js";
import { Limiter } from "../../src/server/limiter.js";
import { noopMetrics } from "../../src/server/metrics.js";
import type { Owner, Ownership, OwnershipVerdict } from "../../src/server/ownership.js";

/** Shared by the forwarding tests: an ownership of two members and a server's request path. */

/** Keys named in `remote` belong to member b; every other key is this server's. */
export class FakeOwnership implements Ownership {
  constructor(private readonly remote: ReadonlySet<string> = new Set()) {}
  generation() {
    return 3;
  }
  check(shardKey: string): OwnershipVerdict {
    return this.remote.has(shardKey) ? "not_owner" : "own";
  }
  ownerOf(shardKey: string): Owner {
    return this.remote.has(shardKey)
      ? { id: "b", address: "b:1", self: false }
      : { id: "a", address: "a:1", self: true };
  }
  changed(ms: number) {
    return new Promise<void>((r) => setTimeout(r, ms));
  }
  view() {
    return { generation: 3, members: [], slices: [], standalone: false };
  }
}

/** A server's request path on `engine` under `config`: what the owner of a forwarded part runs. */
export function fakeServer(
  config: LimitConfig,
  clock: ManualClock,
  ownership: Ownership,
  engine = new Engine(),
) {
  const deps = { engine, clock, ownership, limits: DEFAULT_INPUT_LIMITS, metrics: noopMetrics };
  const limiter = new Limiter({ ...deps, config });
  const envoy = new EnvoyRateLimit(
    deps,
    (domain, entries) => config.resolve(domain, entries),
    (domain) => config.domains.includes(domain),
  );
  return { engine, limiter, envoy };
}
