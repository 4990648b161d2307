/**
 * Polls `cond` until it returns true, failing with `what` after `timeoutMs`. For conditions
 * that only real time can bring about (file watchers, child processes, a cluster settling);
 * never a fixed sleep. A throwing `cond` counts as "not yet". `abort` is asked before each poll:
 * an error it returns ends the wait at once (a process that exited will never become ready).
 */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  intervalMs = 20,
  abort?: () => Error | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stop = abort?.();
    if (stop) throw stop;
    let ok = false;
    try {
      ok = await cond();
    } catch {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
