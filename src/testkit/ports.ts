import net from "node:net";

/*
 * Ports for processes the tests start (which must keep them across a restart, so they cannot
 * bind port 0 themselves). Taking a port from the OS (listen on 0, close, hand it out) raced:
 * that port lies in the ephemeral range, so any outgoing connection on the machine, or another
 * test worker asking the same way, could take it before the server bound it (seen in CI:
 * EADDRINUSE). So ports come from below the ephemeral range (Linux: 32768 and up), each
 * process (vitest worker, benchmark) from its own band, handed out in turn and probed.
 */
const LOW = 10_000;
const HIGH = 32_000;
const BANDS = 16;
const BAND = Math.floor((HIGH - LOW) / BANDS);

function bandIndex(): number {
  // vitest numbers its workers 1..N; anything else (a benchmark, a script) goes by its pid.
  const pool = Number(process.env.VITEST_POOL_ID);
  return (Number.isInteger(pool) && pool > 0 ? pool : process.pid) % BANDS;
}

let next = 0;

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/**
 * A loopback TCP port nobody listens on, from this process's band: never the same one twice in
 * a process until the band wraps (about 1,300 ports later).
 */
export async function freePort(): Promise<number> {
  const base = LOW + bandIndex() * BAND;
  // Start at a random point: runs in quick succession do not meet ports in TIME_WAIT.
  if (next === 0) next = 1 + Math.floor(Math.random() * BAND);
  for (let tries = 0; tries < BAND; tries++) {
    const port = base + (next++ % BAND);
    if (await canBind(port)) return port;
  }
  throw new Error(`freePort: no free port in ${base}..${base + BAND - 1}`);
}
