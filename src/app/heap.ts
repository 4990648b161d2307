/**
 * The V8 heap options the server runs with by default (issue 16, bench/RESULTS.md 16x): a larger
 * young generation than Node 20's default (16 MiB semi-spaces, 64 here), so that at a million counters and
 * hundreds of thousands of report entries a second the young generation is collected less often,
 * each collection no longer (what survives one is the calls in flight, whatever its size).
 *
 * Every default run gets them: the `shardlimit` command (its first line runs
 * `node --max-semi-space-size=...`), the image (`NODE_OPTIONS` in the Dockerfile, and in the Helm
 * chart, which sets NODE_OPTIONS for the old generation too), and `serve --workers` children
 * (they inherit the supervisor's node options). test/app/heap.test.ts keeps those places in step
 * with this list.
 */
export const HEAP_OPTIONS: readonly string[] = ["--max-semi-space-size=64"];

const SEMI_SPACE = /^--max[-_]semi[-_]space[-_]size(=|$)/;

/**
 * The start-up log's note on the young generation: the semi-space option in force (from the
 * command line, else NODE_OPTIONS), or a warning that the process runs without one.
 */
export function heapNote(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string = process.env.NODE_OPTIONS ?? "",
): { semiSpace: string } | { warning: string } {
  // The command line is applied after NODE_OPTIONS, so its option is the one in force.
  const given = [...nodeOptions.split(/\s+/), ...execArgv].filter((a) => SEMI_SPACE.test(a));
  const last = given.at(-1);
  if (last !== undefined) return { semiSpace: last };
  return {
    warning:
      `node runs with its default young generation: start the server with ${HEAP_OPTIONS.join(" ")} ` +
      "(the shardlimit command and the image do) for shorter GC pauses at millions of counters",
  };
}
