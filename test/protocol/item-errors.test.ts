import { describe, expect, it } from "vitest";
import {
  ERRORS,
  type ErrorName,
  NotOwnerError,
  ShardlimitError,
  UnavailableError,
} from "../../src/core/errors.js";
import {
  clientRetries,
  ErrorCode,
  errorFromItem,
  errorName,
  serverRetries,
} from "../../src/protocol/item-errors.js";

describe("the error-code table", () => {
  it("gives every per-item code one wire number, and the published numbers stay", () => {
    const wire = Object.values(ERRORS).flatMap((s) => ("wire" in s ? [s.wire] : []));
    expect(new Set(wire).size).toBe(wire.length);
    expect(ErrorCode).toEqual({
      NOT_OWNER: 1,
      INVALID_KEY: 2,
      INVALID_AMOUNT: 3,
      COUNTERS_EXHAUSTED: 4,
      WRONG_ALGORITHM: 5,
      SLICE_NOT_READY: 6,
      UNKNOWN_KEY_HANDLE: 7,
      OWNER_UNAVAILABLE: 8,
      INVALID_PRIORITY: 9,
      UNKNOWN_TICKET: 12,
      PERMISSION_DENIED: 13,
    });
  });

  it("says who retries each per-item code", () => {
    const byClient = Object.entries(ErrorCode)
      .filter(([, v]) => clientRetries(v))
      .map(([k]) => k);
    const byServer = Object.entries(ErrorCode)
      .filter(([, v]) => serverRetries(v))
      .map(([k]) => k);
    expect(byClient.sort()).toEqual(
      [
        "COUNTERS_EXHAUSTED",
        "NOT_OWNER",
        "OWNER_UNAVAILABLE",
        "SLICE_NOT_READY",
        "UNKNOWN_KEY_HANDLE",
      ].sort(),
    );
    expect(byServer.sort()).toEqual(["NOT_OWNER", "OWNER_UNAVAILABLE", "SLICE_NOT_READY"]);
    expect(clientRetries(99)).toBe(false);
    expect(serverRetries(0)).toBe(false);
  });

  it("turns an item error into the typed error callers match on, and names unknown codes", () => {
    for (const [name, code] of Object.entries(ErrorCode)) {
      const err = errorFromItem({ code, message: "m" }, 7);
      expect(err).toBeInstanceOf(ShardlimitError);
      expect(err.code).toBe(name as ErrorName);
      expect(errorName(code)).toBe(name);
    }
    const moved = errorFromItem({ code: ErrorCode.NOT_OWNER, message: "moved" }, 7);
    expect(moved).toBeInstanceOf(NotOwnerError);
    expect((moved as NotOwnerError).generation).toBe(7);
    const future = errorFromItem({ code: 42 as never, message: "new" });
    expect(future).toBeInstanceOf(UnavailableError);
    expect(future.message).toBe("CODE_42: new");
  });
});
