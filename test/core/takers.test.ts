import { describe, expect, it } from "vitest";
import { Engine } from "../../src/core/engine.js";
import { limitDefaults } from "../../src/core/limit.js";
import { TicketTable } from "../../src/core/ticket-table.js";
import { restoreCounter, snapshotCounter } from "../../src/core/transfer.js";

/** Who took a lease or a ticket is kept with it: the server lets only that identity release or settle it. */

const CONC = limitDefaults({ algorithm: "concurrency", limit: 5 });
const T0 = 1_000_000;

describe("lease takers", () => {
  it("are recorded on acquire and read back while the lease lives", () => {
    const e = new Engine({});
    e.acquire("d/c=1", CONC, "L1", 1, T0, 1000, "d/c=1", "gw-a");
    e.acquire("d/c=1", CONC, "L2", 1, T0, 1000);
    expect(e.leaseTaker("d/c=1", "L1", T0 + 999)).toBe("gw-a");
    expect(e.leaseTaker("d/c=1", "L2", T0)).toBeUndefined(); // taken without an identity
    expect(e.leaseTaker("d/c=1", "L1", T0 + 1000)).toBeUndefined(); // expired: gone
    expect(e.leaseTaker("d/c=1", "nope", T0)).toBeUndefined();
  });

  it("travel with the counter in a handoff snapshot", () => {
    const e = new Engine({});
    e.acquire("d/c=1", CONC, "L1", 2, T0, 1000, "d/c=1", "gw-a");
    const snap = snapshotCounter("d/c=1", e.counterFor("d/c=1", CONC, T0), T0);
    expect(snap.leases).toEqual([{ id: "L1", amount: 2, expiresInMs: 1000, taker: "gw-a" }]);
    const back = restoreCounter(snap, T0 + 10);
    expect(back.leases!.takerOf("L1", T0 + 10)).toBe("gw-a");
  });
});

describe("ticket takers", () => {
  it("are kept on the ticket; absent when opened without an identity", () => {
    let n = 0;
    const table = new TicketTable(10, () => `t${++n}`);
    expect(table.open("d/k=1", 1, [], 1000, T0, "gw-a").taker).toBe("gw-a");
    expect(table.open("d/k=1", 1, [], 1000, T0).taker).toBeUndefined();
  });
});
