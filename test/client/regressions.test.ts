import { describe, expect, it } from "vitest";
import type { Directory } from "../../src/client/directory.js";
import type { KeyTable } from "../../src/client/key-table.js";
import type { ManualClock } from "../../src/core/clock.js";
import { keyPoint } from "../../src/keyspace/hash.js";
import {
  A,
  B,
  config,
  type FakeTransport,
  startGateway,
  twoOwners,
} from "../../src/testkit/fake-transport.js";

/**
 * Counting across owner reloads and restarts, outages, config swaps and members leaving with a
 * report in flight: each case once lost or doubled counts (found in review).
 */

function setup(addresses = [A], yaml?: string) {
  const g = startGateway({ addresses, ...(yaml ? { yaml } : {}) });
  g.run(10);
  return g;
}

/** Units the owner at `address` has counted for `api/minute=<v>` (limit 600). */
function used(t: FakeTransport, clock: ManualClock, value: string, address = A): number {
  const r = t.config.resolve("api", [{ key: "minute", value }])!;
  return 600 - t.servers.get(address)!.engine.peek(r.counterKey, r.rule, clock.now()).remaining;
}

describe("counts stay exact", () => {
  it("an owner's config reload does not make an idle gateway's window count twice", () => {
    const { t, limiter, run, clock } = setup();
    let admitted = 0;
    for (let i = 0; i < 10; i++) {
      for (let j = 0; j < 10; j++) if (limiter.decide("api/minute=x")) admitted++;
      run(100);
    }
    run(2300); // idle: the owner forgets this client for the key after 1 s
    t.servers.get(A)!.setConfig(config()); // same YAML: a new key epoch, same process
    if (limiter.decide("api/minute=x")) admitted++;
    run(500);
    expect(used(t, clock, "x")).toBe(admitted);
  });

  it("an owner restarted at the same address rebuilds every key, also those reported later", () => {
    const { t, limiter, run, clock } = setup();
    let admitted = 0;
    for (let i = 0; i < 10; i++) {
      for (let j = 0; j < 10; j++) if (limiter.decide("api/minute=x")) admitted++;
      limiter.decide("api/minute=y");
      run(100);
    }
    run(300);
    t.servers.set(A, t.limiter()); // restarted: empty counters, new incarnation
    limiter.decide("api/minute=y"); // only y in the first report to the new process
    run(150);
    if (limiter.decide("api/minute=x")) admitted++;
    run(500);
    expect(used(t, clock, "x")).toBe(admitted);
  });

  it("a late answer from a member that left the assignment is not applied twice", () => {
    const { t, limiter, run } = setup([A, B]);
    twoOwners(t);
    run(6000); // the periodic refresh picks the view up
    let key = "";
    for (let i = 0; ; i++) {
      key = `api/minute=k${i}`;
      if (keyPoint(key) < 2 ** 31) break;
    }
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 5; j++) limiter.decide(key);
      run(100);
    }
    run(300);
    const windowTotal = () =>
      limiter.describe(key) && (limiter as unknown as { keys: KeyTable }).keys.counter(key)!.windowTotal;
    const before = windowTotal()!;
    for (let j = 0; j < 10; j++) limiter.decide(key);
    t.view = {
      generation: 2,
      members: [{ id: "b", address: B }],
      slices: [{ start: "0", owner: 0 }],
      standalone: false,
    };
    // The view without A is asked for, then a report goes to A; both answers come a millisecond
    // later, the view first: the report's answer arrives from a member no longer in the view.
    (limiter as unknown as { directory: Directory }).directory.refreshView(true);
    limiter.flush();
    run(5);
    expect(windowTotal()).toBe(before + 10);
  });
});

describe("outages and config swaps", () => {
  it("the fallback share of a window renews every window during an outage", () => {
    const yaml = `domain: api
descriptors:
  - key: sec
    rate_limit: { unit: second, requests_per_unit: 100 }
  - key: minute
    rate_limit: { unit: minute, requests_per_unit: 600 }
`;
    const { t, limiter, run } = setup([A], yaml);
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 5; j++) limiter.decide("api/sec=x");
      run(100);
    }
    t.modes.set(A, "fail");
    const perSecond: number[] = [];
    for (let s = 0; s < 5; s++) {
      let n = 0;
      for (let i = 0; i < 100; i++) {
        for (let j = 0; j < 2; j++) if (limiter.decide("api/sec=x")) n++;
        run(10);
      }
      perSecond.push(n);
    }
    expect(perSecond.slice(1).every((n) => n >= 90 && n <= 100)).toBe(true);
  });

  it("a gateway's config swap keeps equal limits' policies and loses no settled cost", () => {
    const { t, limiter, run } = setup();
    for (let i = 0; i < 10; i++) {
      limiter.decide("api/minute=z");
      run(100);
    }
    const ticket = limiter.reserve("api/minute=z", 10)!;
    limiter.setConfig(config()); // the same rules recompiled, as a GetLimits refetch does
    let rejected = 0;
    for (let i = 0; i < 50; i++) if (!limiter.decide("api/minute=z")) rejected++;
    expect(rejected).toBe(0);
    limiter.settle(ticket, 200);
    run(500);
    const sum = t.reports.flatMap((r) => r.req.entries).reduce((s, e) => s + e.admitted, 0);
    expect(sum).toBe(10 + 200 + 50);
  });

  it("a changed limit gets a new counter, and a ticket from before still settles into it", () => {
    const { t, limiter, run } = setup();
    limiter.decide("api/minute=z");
    run(200);
    const ticket = limiter.reserve("api/minute=z", 10)!;
    limiter.setConfig(
      config().sources[0]!.text.includes("600")
        ? config(t.config.sources[0]!.text.replace("600", "700"))
        : config(),
    );
    limiter.settle(ticket, 200);
    run(500);
    const sum = t.reports.flatMap((r) => r.req.entries).reduce((s, e) => s + e.admitted, 0);
    expect(sum).toBe(1 + 200);
  });
});
