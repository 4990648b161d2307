/** Milliseconds since the epoch. The core never reads time itself: callers pass `now`. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A frozen clock that moves only when told: exact tests and simulations. */
export class ManualClock implements Clock {
  private t: number;
  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ms must be >= 0, got ${ms}`);
    this.t += ms;
  }
  set(t: number): void {
    this.t = t;
  }
}
