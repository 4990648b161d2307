import * as grpc from "@grpc/grpc-js";
import { type Clock, systemClock } from "../core/clock.js";
import { DEFAULT_INPUT_LIMITS } from "../protocol/input-limits.js";
import type {
  ForwardRequest,
  ForwardResponse,
  HandoffRequest,
  HandoffResponse,
  InspectRequest,
  InspectResponse,
  ReclaimRequest,
  ReclaimResponse,
  ReplicateRequest,
  ReplicateResponse,
  StandbyRequest,
  StandbyResponse,
} from "../protocol/messages.js";
import { PEER_SERVICE, serviceDefinition } from "../protocol/proto.js";
import { type CallMetadata, promisify, type Unary } from "../protocol/rpc.js";
import { type ChannelSecurity, INSECURE_CHANNEL } from "../security/tls.js";

export interface PeerRpc {
  forward: Unary<ForwardRequest, ForwardResponse>;
  handoff: Unary<HandoffRequest, HandoffResponse>;
  reclaim: Unary<ReclaimRequest, ReclaimResponse>;
  replicate: Unary<ReplicateRequest, ReplicateResponse>;
  standby: Unary<StandbyRequest, StandbyResponse>;
  /** Optional: test fakes of the other calls need not answer it. */
  inspect?: Unary<InspectRequest, InspectResponse>;
  close(): void;
}

const PeerClient = grpc.makeGenericClientConstructor(serviceDefinition(PEER_SERVICE), "Peer");

/**
 * The largest message between peers: the servers' receive limit (`maxMessageBytes`), so what a
 * peer may send is what the other accepts. Handoff chunks are cut below it (handoff.ts).
 */
export const PEER_MAX_MESSAGE_BYTES = DEFAULT_INPUT_LIMITS.maxMessageBytes;

/**
 * A channel to one peer; call deadlines are set on `clock` (wall time: gRPC's deadlines are).
 * `security`: TLS (this server's certificate presented, the peer's verified), plaintext by default.
 */
export function connectPeer(
  address: string,
  clock: Clock = systemClock,
  maxMessageBytes = PEER_MAX_MESSAGE_BYTES,
  security: ChannelSecurity = INSECURE_CHANNEL,
  /** Per call: this server's bearer token (`--token-file`), when members authenticate by token. */
  metadata?: CallMetadata,
): PeerRpc {
  const c = new PeerClient(address, security.credentials, {
    ...security.options,
    // A peer that restarts on the same address is reconnected to quickly.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
  });
  return {
    forward: promisify(c, "Forward", clock, metadata),
    handoff: promisify(c, "Handoff", clock, metadata),
    reclaim: promisify(c, "Reclaim", clock, metadata),
    replicate: promisify(c, "Replicate", clock, metadata),
    standby: promisify(c, "Standby", clock, metadata),
    inspect: promisify(c, "Inspect", clock, metadata),
    close: () => c.close(),
  };
}

/** One channel per peer address, made on first use and closed when the peer leaves. */
export class PeerPool<C extends { close(): void } = PeerRpc> {
  private readonly peers = new Map<string, C>();

  constructor(private readonly connect: (address: string) => C) {}

  get(address: string): C {
    let p = this.peers.get(address);
    if (!p) {
      p = this.connect(address);
      this.peers.set(address, p);
    }
    return p;
  }

  /** Closes the channels of addresses no longer in the cluster. */
  retain(addresses: ReadonlySet<string>): void {
    for (const [address, p] of this.peers) {
      if (!addresses.has(address)) {
        p.close();
        this.peers.delete(address);
      }
    }
  }

  close(): void {
    this.retain(new Set());
  }
}
