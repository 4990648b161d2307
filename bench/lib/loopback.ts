import { createLimiter } from "../../src/client/create.js";
import type { GatewayLimiter } from "../../src/client/gateway-limiter.js";
import { connect, type RateLimiterRpc } from "../../src/protocol/rpc.js";
import { type BenchServer, spawnServer } from "./spawn-server.js";

/** One standalone server in a child process, a gRPC client to it, and `gateways` batched gateways. */
export interface Loopback {
  server: BenchServer;
  rpc: RateLimiterRpc;
  gateways: GatewayLimiter[];
  stop(): Promise<void>;
}

export async function startLoopback(config: string, gateways: number): Promise<Loopback> {
  const server = await spawnServer({ config, pin: false });
  const rpc = connect(server.address);
  const gws: GatewayLimiter[] = [];
  for (let g = 0; g < gateways; g++)
    gws.push(await createLimiter({ servers: [server.address], clientId: `gw${g}` }));
  return {
    server,
    rpc,
    gateways: gws,
    async stop() {
      for (const g of gws) g.close();
      rpc.close();
      await server.stop();
    },
  };
}
