import { rmSync } from "node:fs";
import { Redis } from "ioredis";
import { spawnChild, waitReady } from "./child.js";
import { freePort } from "./ports.js";
import { tempDir } from "./temp-dir.js";

export interface RedisProcess {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

/** Debian's `redis-server` on a free loopback port, no persistence, in a temporary dir. */
export async function startRedis(): Promise<RedisProcess> {
  const port = await freePort();
  const dir = tempDir("shardlimit-redis-");
  const child = spawnChild("redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
  ]);
  const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 });
  // Refused connections are expected until redis-server listens; without a listener ioredis
  // prints each as an unhandled error.
  probe.on("error", () => undefined);
  try {
    await waitReady(
      child,
      "redis-server (is it installed? Debian: apt-get install redis-server)",
      async () => {
        if (probe.status !== "ready") await probe.connect().catch(() => undefined);
        return (await probe.ping()) === "PONG";
      },
    );
  } finally {
    probe.disconnect();
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    async stop() {
      await child.stop("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
