/**
 * The import-boundary rule (run by `npm run lint:deps` and CI). Folders under src/ form layers;
 * a folder imports only from layers below it, never from its own layer's siblings, so no two
 * folders import each other. docs/architecture.md draws the same picture.
 */
const LAYERS = [
  ["core"], // engine, algorithms and their names, policy, clock, errors
  ["config"], // YAML -> validated, immutable LimitConfig
  ["protocol"], // wire messages, proto loading, input bounds, per-item errors, typed RPC
  ["security"], // TLS credentials (re-read on change), caller identities, the authorisation file
  ["keyspace"], // hash, slices, assignment, placement, rebalance, routing (pure)
  ["server", "client"], // the services over the core; the gateway library
  ["cluster"], // etcd coordination, peers, handoff, forwarding (uses the server's ports)
  ["sidecar", "sim"], // Envoy from a gateway client; the deterministic simulation
  ["app"], // the one place serve, assigner and sidecar are wired
  ["testkit"], // processes, ports, fakes, load generator: tests, bench/ and `shardlimit bench`
  ["loadtest"], // `shardlimit bench`
  ["cli"], // flags -> app
];

const at = (i) => LAYERS.slice(i).flat();
const rules = LAYERS.flatMap((layer, i) =>
  layer.map((folder) => ({
    name: `layer-${folder}`,
    severity: "error",
    comment: `src/${folder} may import only from the layers below it (${LAYERS.slice(0, i).flat().join(", ") || "none"})`,
    from: { path: `^src/${folder}/` },
    to: {
      path: `^src/(${at(i)
        .filter((f) => f !== folder)
        .join("|")})/`,
    },
  })),
);

module.exports = {
  forbidden: [
    ...rules,
    {
      name: "src-not-tests",
      severity: "error",
      comment: "the shipped code never imports tests or benchmarks",
      from: { path: "^src/" },
      to: { path: "^(test|bench)/" },
    },
    {
      name: "no-unresolvable",
      severity: "error",
      comment: "every relative import resolves to a file",
      from: { path: "^src/" },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
  },
};
