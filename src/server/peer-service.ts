import { InvalidArgumentError, NotOwnerError } from "../core/errors.js";
import { ErrorCode, type ItemError } from "../protocol/item-errors.js";
import type {
  CheckResponse,
  ForwardedEnvoy,
  ForwardRequest,
  ForwardResponse,
  HandoffRequest,
  HandoffResponse,
} from "../protocol/messages.js";
import type { EnvoyRateLimit } from "./envoy.js";
import type { Limiter } from "./limiter.js";
import type { Ownership } from "./ownership.js";

export interface PeerServiceDeps {
  limiter: Limiter;
  envoy: EnvoyRateLimit;
  ownership: Ownership;
  receiveHandoff: (req: HandoffRequest) => HandoffResponse;
  /** How long a forwarded call from a server on a newer generation waits for this one to catch up. */
  catchUpMs?: number;
}

const NO_ERROR: ItemError = { code: 0 as ItemError["code"], message: "" };

function partError(err: unknown): ItemError {
  if (err instanceof NotOwnerError) return { code: ErrorCode.NOT_OWNER, message: err.message };
  if (err instanceof InvalidArgumentError) return { code: ErrorCode.INVALID_KEY, message: err.message };
  throw err;
}

/** The owner's side of server-to-server calls: forwarded parts are decided as if sent here. */
export class PeerService {
  constructor(private readonly deps: PeerServiceDeps) {}

  async forward(req: ForwardRequest): Promise<ForwardResponse> {
    const { limiter, envoy, ownership } = this.deps;
    if (req.generation > ownership.generation()) await ownership.changed(this.deps.catchUpMs ?? 300);
    const envoyOut: ForwardedEnvoy[] = req.envoy.map((part) => {
      try {
        return { response: envoy.shouldRateLimit(part) };
      } catch (err) {
        return { error: partError(err) };
      }
    });
    const checks: CheckResponse[] = [];
    const checkErrors: ItemError[] = [];
    for (const part of req.checks) {
      try {
        checks.push(limiter.check(part));
        checkErrors.push(NO_ERROR);
      } catch (err) {
        checks.push({ generation: ownership.generation(), results: [] });
        checkErrors.push(partError(err));
      }
    }
    return { generation: ownership.generation(), envoy: envoyOut, checks, checkErrors };
  }

  handoff(req: HandoffRequest): HandoffResponse {
    return this.deps.receiveHandoff(req);
  }
}
