import v8 from "node:v8";

/**
 * The V8 heap options the server runs with by default (issue 16, bench/RESULTS.md 16x): a larger
 * young generation than Node 20's default (16 MiB semi-spaces, 64 here), so that at a million counters and
 * hundreds of thousands of report entries a second the young generation is collected less often,
 * each collection no longer (what survives one is the calls in flight, whatever its size).
 *
 * Every default run gets them: the `shardlimit` command (its first line runs
 * `node --max-semi-space-size=...`), the image (`NODE_OPTIONS` in the Dockerfile, and in the Helm
 * chart, which sets NODE_OPTIONS for the old generation too), and `serve --workers` children
 * (they inherit the supervisor's node options, and get a V8 thread pool of their share of the
 * cores: `workerNodeFlags`). test/app/heap.test.ts keeps those places in step with this list.
 */
export const HEAP_OPTIONS: readonly string[] = ["--max-semi-space-size=64"];

/**
 * How far V8 lets the old generation grow past what the last mark-compact left live before it
 * collects again, in percent (`serve --heap-growing-percent`; 0 leaves V8's own factor, which
 * grows with the heap and reached about 2x here). The server's live heap is larger than a
 * do-nothing server's (its counters, its config), node:http2's per-call objects fill the old
 * generation at a steady pace, and with V8's factor the collections came seldom and long: 306 ms,
 * the worst call of a minute beside it (bench/RESULTS.md 16h). At 30 they come more often and
 * last 39-54 ms (16i); the CPU they cost at a million counters is measured there too.
 *
 * Not a node option: NODE_OPTIONS refuses `--heap-growing-percent`, and the flag is read at every
 * collection, so the server sets it on itself at start-up (`applyHeapGrowing`).
 */
export const DEFAULT_HEAP_GROWING_PERCENT = 30;

let growingPercent = 0;

const GROWING = /^--heap[-_]growing[-_]percent(?:=(.*))?$/;

/** The `--heap-growing-percent` node was started with (the last one), if any. */
function growingOnNode(execArgv: readonly string[]): number | undefined {
  let found: number | undefined;
  execArgv.forEach((a, i) => {
    const m = GROWING.exec(a);
    if (m !== null) found = Number(m[1] ?? execArgv[i + 1]);
  });
  return found !== undefined && Number.isFinite(found) ? found : undefined;
}

/**
 * Sets V8's old-generation growing factor for this process (0: V8's own); the start-up log says
 * which is in force. `given`: the operator chose `percent` (flag or environment); else a
 * `--heap-growing-percent` on node's own command line stands, and only without one the default
 * is set.
 */
export function applyHeapGrowing(
  percent: number,
  given = true,
  execArgv: readonly string[] = process.execArgv,
  setFlags: (flags: string) => void = v8.setFlagsFromString,
): void {
  const onNode = given ? undefined : growingOnNode(execArgv);
  if (onNode !== undefined) {
    growingPercent = onNode;
    return;
  }
  if (percent > 0) setFlags(`--heap-growing-percent=${percent}`);
  growingPercent = percent;
}

const SEMI_SPACE = /^--max[-_]semi[-_]space[-_]size(=|$)/;

/**
 * Node's own flags of this process matching `flag`, in the order node applies them: NODE_OPTIONS
 * first, then the command line (so the last one is the one in force).
 */
function nodeFlagsGiven(flag: RegExp, execArgv: readonly string[], nodeOptions: string): string[] {
  return [...nodeOptions.split(/\s+/), ...execArgv].filter((a) => flag.test(a));
}

/**
 * The start-up log's note on the young generation: the semi-space option in force (from the
 * command line, else NODE_OPTIONS), or a warning that the process runs without one.
 */
export function heapNote(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string = process.env.NODE_OPTIONS ?? "",
): ({ semiSpace: string } | { warning: string }) & { growingPercent: number } {
  const given = nodeFlagsGiven(SEMI_SPACE, execArgv, nodeOptions);
  const last = given.at(-1);
  if (last !== undefined) return { semiSpace: last, growingPercent };
  return {
    growingPercent,
    warning:
      `node runs with its default young generation: start the server with ${HEAP_OPTIONS.join(" ")} ` +
      "(the shardlimit command and the image do) for shorter GC pauses at millions of counters",
  };
}

const POOL_SIZE = /^--v8[-_]pool[-_]size(=|$)/;

/**
 * Node's flags for each of `serve --workers N`'s processes beyond the supervisor's own: a V8
 * thread pool of cores / N threads (at least 1) unless the operator set `--v8-pool-size`. Node's
 * default pool is 4 threads per process whatever the machine, and the GC's helper threads of N
 * workers then take the cores from each other's main threads: on 2 cores, one worker used 1.13-1.19
 * cores (its main thread and GC helpers), and two workers served 29.0k calls/s with pools of 4
 * against 32.5k with pools of 1 (medians of three interleaved runs, bench/RESULTS.md 16k).
 */
export function workerNodeFlags(
  workers: number,
  cores: number,
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string = process.env.NODE_OPTIONS ?? "",
): string[] {
  if (workers <= 1) return [];
  if (nodeFlagsGiven(POOL_SIZE, execArgv, nodeOptions).length > 0) return [];
  return [`--v8-pool-size=${Math.max(1, Math.floor(cores / workers))}`];
}
