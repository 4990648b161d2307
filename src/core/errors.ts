/**
 * The one error-code table, and the error classes callers match on. Each code appears once, with
 * its number inside batch answers (`wire`, per-item codes only), the gRPC status a request that
 * fails with it gets, and who tries again after it. Codes and wire numbers never change once
 * published. Conversion to and from per-item errors is in protocol/item-errors.ts.
 */

/** gRPC's status numbers (the core stays free of grpc-js). */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatus = (typeof GrpcStatus)[keyof typeof GrpcStatus];

export interface ErrorSpec {
  /** The per-item code in batch answers (`ItemError.code`); absent for request-level errors. */
  readonly wire?: number;
  /** The status of a gRPC call that fails with this error as a whole. */
  readonly grpc: GrpcStatus;
  /** A gateway keeps the counts and sends them again in its next report (after a refresh). */
  readonly clientRetries: boolean;
  /** A server that forwarded the item tries its owner again (after the assignment moves on). */
  readonly serverRetries: boolean;
  readonly meaning: string;
}

const {
  INVALID_ARGUMENT,
  PERMISSION_DENIED,
  RESOURCE_EXHAUSTED,
  FAILED_PRECONDITION,
  UNAVAILABLE,
  UNAUTHENTICATED,
} = GrpcStatus;

export const ERRORS = {
  INVALID_ARGUMENT: {
    grpc: INVALID_ARGUMENT,
    clientRetries: false,
    serverRetries: false,
    meaning: "a request is malformed or out of bounds; nothing was changed",
  },
  NOT_OWNER: {
    wire: 1,
    grpc: FAILED_PRECONDITION,
    clientRetries: true,
    serverRetries: true,
    meaning: "the key's slice belongs to another server in the generation named",
  },
  INVALID_KEY: {
    wire: 2,
    grpc: INVALID_ARGUMENT,
    clientRetries: false,
    serverRetries: false,
    meaning: "the key is malformed, too long, or names no known limit",
  },
  INVALID_AMOUNT: {
    wire: 3,
    grpc: INVALID_ARGUMENT,
    clientRetries: false,
    serverRetries: false,
    meaning: "an amount is not a number, negative, or over the bound",
  },
  COUNTERS_EXHAUSTED: {
    wire: 4,
    grpc: RESOURCE_EXHAUSTED,
    clientRetries: true,
    serverRetries: false,
    meaning: "a bound on the server's state is reached: its counters in all, or one key's leases",
  },
  WRONG_ALGORITHM: {
    wire: 5,
    grpc: FAILED_PRECONDITION,
    clientRetries: false,
    serverRetries: false,
    meaning: "the call does not fit the key's algorithm (e.g. Acquire on a rate limit)",
  },
  SLICE_NOT_READY: {
    wire: 6,
    grpc: FAILED_PRECONDITION,
    clientRetries: true,
    serverRetries: true,
    meaning: "the key's slice is this server's but its handoff has not arrived yet",
  },
  UNKNOWN_KEY_HANDLE: {
    wire: 7,
    grpc: FAILED_PRECONDITION,
    clientRetries: true,
    serverRetries: false,
    meaning: "the report named a key handle this server does not know (it restarted)",
  },
  OWNER_UNAVAILABLE: {
    wire: 8,
    grpc: FAILED_PRECONDITION,
    clientRetries: true,
    serverRetries: true,
    meaning: "the server that received the item could not reach the key's owner",
  },
  INVALID_PRIORITY: {
    wire: 9,
    grpc: INVALID_ARGUMENT,
    clientRetries: false,
    serverRetries: false,
    meaning: "the item's priority is not one of the Priority values",
  },
  UNKNOWN_TICKET: {
    wire: 12,
    grpc: FAILED_PRECONDITION,
    clientRetries: false,
    serverRetries: false,
    meaning:
      "Settle named a ticket this server does not hold (never issued, past its timeout, another key's, or lost with its server)",
  },
  PERMISSION_DENIED: {
    wire: 13,
    grpc: PERMISSION_DENIED,
    clientRetries: false,
    serverRetries: false,
    meaning:
      "the caller's identity may not do this (the auth file: its role, its domains; a ticket or lease another identity took); nothing was changed",
  },
  UNAUTHENTICATED: {
    grpc: UNAUTHENTICATED,
    clientRetries: false,
    serverRetries: false,
    meaning:
      "the call's credentials prove no identity (a bearer token that matches none); nothing was changed",
  },
  UNAVAILABLE: {
    grpc: UNAVAILABLE,
    clientRetries: false,
    serverRetries: false,
    meaning: "a server this call depends on cannot be reached now; retry shortly",
  },
  NOT_READY: {
    grpc: UNAVAILABLE,
    clientRetries: false,
    serverRetries: false,
    meaning: "the gateway client has not learned the limits and the assignment yet",
  },
  CONFIG_INVALID: {
    grpc: FAILED_PRECONDITION,
    clientRetries: false,
    serverRetries: false,
    meaning: "a configuration file or directory failed validation",
  },
  OPTIONS_INVALID: {
    grpc: FAILED_PRECONDITION,
    clientRetries: false,
    serverRetries: false,
    meaning: "command-line or server options are invalid",
  },
  RLQS_BOUND: {
    grpc: RESOURCE_EXHAUSTED,
    clientRetries: false,
    serverRetries: false,
    meaning: "an RLQS stream would pass the server's max_streams or its max_buckets_per_stream",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorName = keyof typeof ERRORS;

/**
 * Every failure of ours: a stable `code` from the table and a message naming what was wrong.
 * Failures with more to say (a generation, a list of problems) have a subclass.
 */
export class ShardlimitError extends Error {
  readonly code: ErrorName;
  constructor(code: ErrorName, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A request or an item in a batch is malformed or out of bounds. Nothing was changed. */
export class InvalidArgumentError extends ShardlimitError {
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
  }
}

/** The caller may not do this; nothing was changed. */
export class PermissionDeniedError extends ShardlimitError {
  constructor(message: string) {
    super("PERMISSION_DENIED", message);
  }
}

/** The call's credentials prove no identity; nothing was changed. */
export class UnauthenticatedError extends ShardlimitError {
  constructor(message: string) {
    super("UNAUTHENTICATED", message);
  }
}

/** Command-line or server options are invalid. */
export class OptionsError extends ShardlimitError {
  constructor(message: string) {
    super("OPTIONS_INVALID", message);
  }
}

/** The key's slice is owned by another server (cluster mode). */
export class NotOwnerError extends ShardlimitError {
  readonly generation: number;
  constructor(message: string, generation: number) {
    super("NOT_OWNER", message);
    this.generation = generation;
  }
}

/** A server this call depends on (the key's owner) cannot be reached now; retry shortly. */
export class UnavailableError extends ShardlimitError {
  constructor(message: string) {
    super("UNAVAILABLE", message);
  }
}

/** The gateway client has not yet learned the limits and the assignment from any server. */
export class NotReadyError extends ShardlimitError {
  constructor(message: string) {
    super("NOT_READY", message);
  }
}

/** An RLQS stream was refused or ended: a bound on streams or on one stream's buckets is reached. */
export class RlqsBoundError extends ShardlimitError {
  constructor(message: string) {
    super("RLQS_BOUND", message);
  }
}
