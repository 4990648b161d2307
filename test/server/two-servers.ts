import { BatchingForwarder } from "../../src/cluster/forwarder.js";
import { connectPeer, type PeerRpc } from "../../src/cluster/peers.js";
import { compileSources } from "../../src/config/load.js";
import { DEFAULT_INPUT_LIMITS } from "../../src/protocol/input-limits.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { type GrpcServer, startGrpc } from "../../src/server/grpc.js";
import type { Owner, Ownership, OwnershipVerdict } from "../../src/server/ownership.js";
import { PeerService } from "../../src/server/peer-service.js";
import { requestPath } from "../../src/testkit/in-process.js";

/**
 * Two in-process servers on loopback ports (no etcd): B owns every key, A owns none and forwards
 * to B over a real Peer channel. For what must cross a forwarded call (spans, explanations).
 */
export interface TwoServers {
  a: GrpcServer;
  b: GrpcServer;
  /** A client of A (the server that forwards). */
  rpc: RateLimiterRpc;
  bAddress: string;
  stop(): void;
}

export const TWO_SERVERS_CONFIG =
  "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { name: k_rpm, unit: minute, requests_per_unit: 2 }\n";

const config = compileSources([{ file: "t.yaml", text: TWO_SERVERS_CONFIG }]);

function ownership(self: boolean, owner: () => string): Ownership {
  return {
    generation: () => 1,
    check: (): OwnershipVerdict => (self ? "own" : "not_owner"),
    ownerOf: (): Owner => ({ id: "b", address: owner(), self }),
    changed: () => new Promise<void>(() => {}),
    view: () => ({ generation: 1, members: [], slices: [], standalone: false }),
  } as unknown as Ownership;
}

async function server(own: Ownership, forwarder?: BatchingForwarder): Promise<GrpcServer> {
  const { limiter, envoy, router } = requestPath(config, own, { forwarder });
  const peer = new PeerService({
    limiter,
    envoy,
    ownership: own,
    receiveHandoff: () => ({ accepted: 0, generation: 1 }),
  });
  return startGrpc(
    {
      limiter,
      router,
      peer,
      maxMessageBytes: DEFAULT_INPUT_LIMITS.maxMessageBytes,
      onUnexpected: (_m, err) => {
        throw err;
      },
    },
    "127.0.0.1",
    0,
  );
}

export async function startTwoServers(): Promise<TwoServers> {
  let bAddress = "";
  const b = await server(ownership(true, () => bAddress));
  bAddress = `127.0.0.1:${b.port}`;
  const peers = new Map<string, PeerRpc>();
  const forwarder = new BatchingForwarder({
    peer: (address) => {
      let p = peers.get(address);
      if (p === undefined) {
        p = connectPeer(address);
        peers.set(address, p);
      }
      return p;
    },
  });
  const a = await server(
    ownership(false, () => bAddress),
    forwarder,
  );
  const rpc = connect(`127.0.0.1:${a.port}`);
  return {
    a,
    b,
    rpc,
    bAddress,
    stop() {
      rpc.close();
      for (const p of peers.values()) p.close();
      a.server.forceShutdown();
      b.server.forceShutdown();
    },
  };
}
