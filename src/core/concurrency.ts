/**
 * Held concurrency slots, by lease id. A lease not released by its deadline is dropped, so a
 * caller that crashed cannot hold a slot forever. Sweeping is skipped until the earliest deadline.
 */
interface Lease {
  amount: number;
  expiresAt: number;
  /** The identity that took it (under an authorisation file): only it may release or renew it. */
  taker?: string;
}

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();
  held = 0;
  private nextExpiry = Number.POSITIVE_INFINITY;

  get size(): number {
    return this.leases.size;
  }

  sweep(now: number): void {
    if (now < this.nextExpiry) return;
    let next = Number.POSITIVE_INFINITY;
    for (const [id, lease] of this.leases) {
      if (lease.expiresAt <= now) {
        this.leases.delete(id);
        this.held -= lease.amount;
      } else if (lease.expiresAt < next) {
        next = lease.expiresAt;
      }
    }
    this.nextExpiry = next;
  }

  forEach(fn: (id: string, amount: number, expiresAt: number, taker: string | undefined) => void): void {
    for (const [id, lease] of this.leases) fn(id, lease.amount, lease.expiresAt, lease.taker);
  }

  /** Who took lease `id`: undefined if it is unknown, past `now`, or was taken without an identity. */
  takerOf(id: string, now: number): string | undefined {
    const lease = this.leases.get(id);
    return lease !== undefined && lease.expiresAt > now ? lease.taker : undefined;
  }

  has(id: string): boolean {
    return this.leases.has(id);
  }

  add(id: string, amount: number, expiresAt: number, taker?: string): void {
    this.leases.set(id, taker === undefined ? { amount, expiresAt } : { amount, expiresAt, taker });
    this.held += amount;
    if (expiresAt < this.nextExpiry) this.nextExpiry = expiresAt;
  }

  /** Extends a held lease; false if it is unknown (never acquired, released or expired). */
  renew(id: string, expiresAt: number): boolean {
    const lease = this.leases.get(id);
    if (!lease) return false;
    lease.expiresAt = expiresAt;
    return true;
  }

  /** The amount released, or 0 if the lease was unknown. */
  release(id: string): number {
    const lease = this.leases.get(id);
    if (!lease) return 0;
    this.leases.delete(id);
    this.held -= lease.amount;
    return lease.amount;
  }

  /** The latest deadline, after which the table is empty. */
  lastExpiry(): number {
    let last = 0;
    for (const lease of this.leases.values()) if (lease.expiresAt > last) last = lease.expiresAt;
    return last;
  }
}
