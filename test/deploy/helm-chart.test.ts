import { beforeAll, describe, expect, it } from "vitest";
import { serveCommand } from "../../src/cli/serve.js";
import { ensureHelm, FULL, lint, type Manifest, NS, one, refused, render } from "./helm.js";

/**
 * The Helm chart, rendered by a real helm (v3.17, see ./helm.ts) in both modes and validated:
 * `helm lint --strict`, every manifest against the Kubernetes API schemas (kubernetes-models,
 * prometheus-operator's for the ServiceMonitor), the wiring (flags and the files they name, probes,
 * grace period, PDB, Services), and the values it must refuse, each with a message naming them.
 */

const PEERS = "rl-shardlimit-peers";

beforeAll(async () => {
  await ensureHelm();
}, 240_000);

/** `--flag=value` args as a map (a bare `--flag` maps to ""). */
function flags(args: string[]): Map<string, string> {
  return new Map(
    args.slice(1).map((a) => {
      const eq = a.indexOf("=");
      return eq < 0 ? [a, ""] : [a.slice(0, eq), a.slice(eq + 1)];
    }),
  );
}

/** The server container and its flags, checked by `serve`'s own parser as the pod would run them. */
function server(workload: Manifest) {
  const pod = workload.spec.template.spec;
  const c = pod.containers.find((x: Manifest) => x.name === "shardlimit");
  expect(c.args[0]).toBe("serve");
  // Kubernetes expands $(POD_NAME) from the container's env; here, the first pod's name.
  expect(c.env.find((e: Manifest) => e.name === "POD_NAME")?.valueFrom?.fieldRef?.fieldPath).toBe(
    "metadata.name",
  );
  const args = (c.args as string[]).map((a) => a.replaceAll("$(POD_NAME)", `${workload.metadata.name}-0`));
  for (const a of args.slice(1)) {
    const cmd = serveCommand()
      .exitOverride()
      .configureOutput({ writeErr: () => {}, writeOut: () => {} });
    const { unknown } = cmd.parseOptions([a]);
    const name = a.split("=")[0]!;
    expect(unknown, `serve has no flag ${name}`).toEqual([]);
  }
  return { pod, c, flags: flags(args) };
}

/** Each file a flag names lies in a mounted volume, from the Secret or ConfigMap `source`. */
function expectMounted(pod: Manifest, c: Manifest, file: string, source: string): void {
  const mount = (c.volumeMounts as Manifest[]).find((m) => file.startsWith(`${m.mountPath}/`));
  expect(mount, `a volume mounted above ${file}`).toBeDefined();
  expect(mount!.subPath, "whole directories, so the kubelet updates them in place").toBeUndefined();
  const v = (pod.volumes as Manifest[]).find((x) => x.name === mount!.name);
  expect(v?.secret?.secretName ?? v?.configMap?.name, file).toBe(source);
}

const counterFit = (limitMi: number) => Math.floor(((limitMi - 256) * 1048576 * 60) / 100 / 485);

const EXTERNAL_ETCD = {
  mode: "cluster",
  replicaCount: 3,
  etcd: { endpoints: ["http://etcd-0.etcd.db.svc:2379", "http://etcd-1.etcd.db.svc:2379"] },
};

describe("the Helm chart", () => {
  it("passes helm lint --strict in every mode", () => {
    lint();
    lint(EXTERNAL_ETCD);
    lint({ mode: "cluster", replicaCount: 3, etcd: { enabled: true } });
    lint("helm/examples/production-values.yaml");
  });

  it("standalone: one server in a Deployment, limits mounted, probes on /readyz and /healthz", () => {
    const docs = render();
    expect(docs.map((d) => d.kind).sort()).toEqual(["ConfigMap", "Deployment", "Service"]);
    const d = one(docs, "Deployment", FULL);
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.strategy.type).toBe("Recreate");
    const { pod, c, flags: f } = server(d);
    expect(f.get("--config")).toBe("/etc/shardlimit/limits");
    expectMounted(pod, c, `${f.get("--config")}/config.yaml`, `${FULL}-limits`);
    expect(one(docs, "ConfigMap", `${FULL}-limits`).data["config.yaml"]).toContain("domain: api");
    expect(f.has("--etcd")).toBe(false);
    expect(f.get("--max-counters")).toBe(String(counterFit(2048)));
    expect(c.env).toContainEqual({
      name: "NODE_OPTIONS",
      value: "--max-old-space-size=1792 --max-semi-space-size=64",
    });
    expect(f.get("--heap-growing-percent")).toBe("30");
    const http = c.ports.find((p: Manifest) => p.name === "http");
    expect(http.containerPort).toBe(Number(f.get("--http-port")));
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    // Standalone shutdown: calls in flight finish (5 s), plus the 5 s margin.
    expect(pod.terminationGracePeriodSeconds).toBe(10);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
  });

  it("cluster with an external etcd: StatefulSet, stable advertised names, PDB, headless and ClusterIP Services", () => {
    const docs = render({ ...EXTERNAL_ETCD, drainTimeoutMs: 20_000, shutdownGraceMs: 3000 });
    const sts = one(docs, "StatefulSet", FULL);
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.serviceName).toBe(PEERS);
    expect(sts.spec.podManagementPolicy).toBe("OrderedReady");
    expect(sts.spec.updateStrategy).toEqual({ type: "RollingUpdate", rollingUpdate: { partition: 0 } });
    expect(sts.spec.minReadySeconds).toBeGreaterThan(0);
    const { pod, c, flags: f } = server(sts);
    expect(f.get("--etcd")).toBe(EXTERNAL_ETCD.etcd.endpoints.join(","));
    expect(f.get("--id")).toBe(`${FULL}-0`);
    expect(f.get("--advertise-address")).toBe(`${FULL}-0.${PEERS}.${NS}.svc:8081`);
    expect(f.get("--lease-ttl")).toBe("3");
    expect(f.get("--drain-timeout")).toBe("20000");
    expect(f.get("--shutdown-grace")).toBe("3000");
    // drain 20 s + leave 2 s + grace 3 s = 25 s, + 5 s margin.
    expect(pod.terminationGracePeriodSeconds).toBe(30);
    expect(c.readinessProbe.httpGet.path).toBe("/readyz");
    expect(pod.affinity.podAntiAffinity).toBeDefined();

    const labels = sts.spec.template.metadata.labels;
    const peers = one(docs, "Service", PEERS);
    expect(peers.spec).toMatchObject({ clusterIP: "None", publishNotReadyAddresses: true, selector: labels });
    expect(peers.spec.ports).toContainEqual(expect.objectContaining({ name: "grpc", port: 8081 }));
    const api = one(docs, "Service", FULL);
    expect(api.spec.type).toBe("ClusterIP");
    expect(api.spec.selector).toEqual(labels);
    const pdb = one(docs, "PodDisruptionBudget", FULL);
    expect(pdb.spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: labels } });
    expect(docs.some((d) => d.metadata.name.includes("etcd"))).toBe(false);
  });

  it("cluster with the chart's etcd: an etcd StatefulSet whose members the servers list", () => {
    const docs = render({ mode: "cluster", replicaCount: 3, etcd: { enabled: true, replicas: 3 } });
    const etcd = one(docs, "StatefulSet", `${FULL}-etcd`);
    expect(etcd.spec.replicas).toBe(3);
    const hl = one(docs, "Service", `${FULL}-etcd`);
    expect(hl.spec.clusterIP).toBe("None");
    expect(hl.spec.selector).toEqual(etcd.spec.template.metadata.labels);
    const urls = [0, 1, 2].map((i) => `http://${FULL}-etcd-${i}.${FULL}-etcd.${NS}.svc:2379`);
    const { flags: f } = server(one(docs, "StatefulSet", FULL));
    expect(f.get("--etcd")).toBe(urls.join(","));
    const cmd: string[] = etcd.spec.template.spec.containers[0].command;
    expect(cmd.find((a) => a.startsWith("--initial-cluster="))?.split(",")).toHaveLength(3);
    // The servers' selector does not take in the etcd pods (Services, the PDB).
    const serverLabels = one(docs, "StatefulSet", FULL).spec.selector.matchLabels;
    const etcdLabels = etcd.spec.template.metadata.labels;
    expect(Object.entries(serverLabels).every(([k, v]) => etcdLabels[k] === v)).toBe(false);
  });

  it("production values (helm/examples): mTLS, etcd over mTLS with a user, authorisation file, ServiceMonitor", () => {
    const docs = render("helm/examples/production-values.yaml");
    const { pod, c, flags: f } = server(one(docs, "StatefulSet", FULL));
    expect(f.get("--tls-client-auth")).toBe("require");
    for (const [flag, source] of [
      ["--tls-cert", "shardlimit-tls"],
      ["--tls-key", "shardlimit-tls"],
      ["--tls-ca", "shardlimit-tls"],
      ["--etcd-ca", "shardlimit-etcd-client"],
      ["--etcd-cert", "shardlimit-etcd-client"],
      ["--etcd-key", "shardlimit-etcd-client"],
      ["--etcd-auth-file", "shardlimit-etcd-auth"],
      ["--auth-file", "shardlimit-auth"],
    ] as const) {
      expect(f.get(flag), flag).toMatch(/^\/etc\/shardlimit\//);
      expectMounted(pod, c, f.get(flag)!, source);
    }
    expect(f.has("--no-reflection")).toBe(true);
    expect(f.get("--limits-read")).toBe("authenticated");
    expect(f.get("--max-counters")).toBe(String(counterFit(4096)));
    expect(
      f
        .get("--etcd")
        ?.split(",")
        .every((u) => u.startsWith("https://")),
    ).toBe(true);
    const sm = one(docs, "ServiceMonitor", FULL);
    expect(sm.metadata.labels.release).toBe("prometheus");
    expect(sm.spec.endpoints).toEqual([{ port: "http", path: "/metrics", interval: "15s" }]);
    // It selects the API Service only: with the peers' Service too, every server is scraped twice.
    const selected = docs.filter(
      (d) =>
        d.kind === "Service" &&
        Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => d.metadata.labels[k] === v),
    );
    expect(selected.map((d) => d.metadata.name)).toEqual([FULL]);
    expect(pod.containers[0].env.map((e: Manifest) => e.name)).toContain("NODE_OPTIONS");
  });

  it("an inline authorisation file and token, the chart's etcd over TLS", () => {
    const docs = render({
      mode: "cluster",
      replicaCount: 3,
      etcd: { enabled: true, tls: { secretName: "etcd-client", serverSecretName: "etcd-server" } },
      auth: { file: "gateways: []\n", limitsRead: "anyone" },
      tokenSecret: "peer-token",
      tls: { secretName: "srv", clientAuth: "request", peerServerName: "shardlimit.internal" },
    });
    const { pod, c, flags: f } = server(one(docs, "StatefulSet", FULL));
    expectMounted(pod, c, f.get("--auth-file")!, `${FULL}-auth`);
    expect(one(docs, "ConfigMap", `${FULL}-auth`).data["auth.yaml"]).toBe("gateways: []\n");
    expectMounted(pod, c, f.get("--token-file")!, "peer-token");
    expect(f.get("--limits-read")).toBe("anyone");
    expect(f.get("--peer-server-name")).toBe("shardlimit.internal");
    expect(f.get("--etcd")).toMatch(/^https:\/\//);
    const etcd = one(docs, "StatefulSet", `${FULL}-etcd`).spec.template.spec;
    expect(etcd.containers[0].command).toContain("--client-cert-auth=true");
    expect(etcd.volumes).toContainEqual({
      name: "tls",
      secret: { secretName: "etcd-server", defaultMode: 0o440 },
    });
  });

  it("limits from etcd: --limits-from=etcd, no limits ConfigMap or volume, etcd TLS and user kept", () => {
    const values = {
      ...EXTERNAL_ETCD,
      limitsFrom: "etcd",
      allowLimitRemoval: true,
      etcd: { ...EXTERNAL_ETCD.etcd, tls: { secretName: "etcd-client" }, authSecret: "etcd-user" },
    };
    lint(values);
    const docs = render(values);
    expect(docs.map((d) => d.kind)).not.toContain("ConfigMap");
    const { pod, c, flags: f } = server(one(docs, "StatefulSet", FULL));
    expect(f.get("--limits-from")).toBe("etcd");
    expect(f.has("--config")).toBe(false);
    expect(f.get("--allow-limit-removal")).toBe("");
    expect((pod.volumes as Manifest[]).map((v) => v.name).sort()).toEqual(["etcd-auth", "etcd-tls"]);
    expectMounted(pod, c, f.get("--etcd-ca")!, "etcd-client");
    expectMounted(pod, c, f.get("--etcd-auth-file")!, "etcd-user");
    // Alone (no TLS, no user): nothing to mount at all.
    const bare = server(one(render({ ...EXTERNAL_ETCD, limitsFrom: "etcd" }), "StatefulSet", FULL));
    expect(bare.flags.get("--limits-from")).toBe("etcd");
    expect(bare.pod.volumes ?? []).toEqual([]);
    // The file mode is unchanged: --config and the ConfigMap.
    expect(server(one(render(EXTERNAL_ETCD), "StatefulSet", FULL)).flags.has("--limits-from")).toBe(false);
    expect(refused({ limitsFrom: "etcd" })).toContain("limitsFrom etcd needs mode: cluster");
    expect(refused({ ...EXTERNAL_ETCD, limitsFrom: "consul" })).toContain("limitsFrom");
  });

  it("refuses values of the wrong type or shape (values.schema.json)", () => {
    expect(refused({ grpcPort: "8081x" })).toMatch(/grpcPort: Invalid type/);
    expect(refused({ mode: "both" })).toMatch(/mode/);
    expect(refused({ maxCounters: "lots" })).toMatch(/maxCounters/);
    expect(refused({ replicas: 3 })).toMatch(/Additional property replicas is not allowed/);
    expect(refused({ mode: "cluster", etcd: { endpoints: ["etcd:2379"] } })).toMatch(/etcd\.endpoints\.0/);
    expect(refused({ tls: { secretName: "s", clientAuth: "always" } })).toMatch(/tls\.clientAuth/);
    expect(refused({ resources: { limits: { memory: "2 gigabytes" } } })).toMatch(
      /resources\.limits\.memory/,
    );
  });

  it("refuses a --max-counters that does not fit the memory limit, naming the memory it needs", () => {
    const msg = refused({ maxCounters: 5_000_000, resources: { limits: { memory: "2Gi" } } });
    expect(msg).toContain(`maxCounters 5000000 does not fit resources.limits.memory 2Gi`);
    expect(msg).toContain(`at most ${counterFit(2048)} fit`);
    const need = /at least (\d+)Mi/.exec(msg)?.[1];
    expect(need).toBeDefined();
    // The memory it names is enough, and one MiB less is not.
    const at = (mi: number) => ({ maxCounters: 5_000_000, resources: { limits: { memory: `${mi}Mi` } } });
    expect(server(one(render(at(Number(need))), "Deployment", FULL)).flags.get("--max-counters")).toBe(
      "5000000",
    );
    refused(at(Number(need) - 1));
    expect(refused({ resources: { limits: { memory: "200Mi" } } })).toContain("leaves no heap");
    // null removes a default in helm's merge.
    expect(refused({ resources: { limits: { memory: null } } })).toContain(
      "resources.limits.memory is required",
    );
  });

  it("refuses combinations that cannot work, naming the values", () => {
    expect(refused({ replicaCount: 3 })).toContain("replicaCount must be 1");
    expect(refused({ mode: "cluster" })).toContain("mode cluster needs etcd");
    expect(refused({ ...EXTERNAL_ETCD, etcd: { ...EXTERNAL_ETCD.etcd, enabled: true } })).toContain(
      "not both",
    );
    expect(refused({ ...EXTERNAL_ETCD, terminationGracePeriodSeconds: 20 })).toContain(
      "terminationGracePeriodSeconds 20 is shorter than the shutdown needs: 27 s",
    );
    expect(refused({ auth: { file: "x: 1", existingConfigMap: "a" } })).toContain(
      "auth.file and auth.existingConfigMap",
    );
    expect(
      refused({ ...EXTERNAL_ETCD, etcd: { ...EXTERNAL_ETCD.etcd, tls: { serverSecretName: "x" } } }),
    ).toContain("etcd.tls.serverSecretName");
    // A grace period set by hand that is long enough is kept.
    const sts = one(render({ ...EXTERNAL_ETCD, terminationGracePeriodSeconds: 60 }), "StatefulSet", FULL);
    expect(sts.spec.template.spec.terminationGracePeriodSeconds).toBe(60);
  });
});
