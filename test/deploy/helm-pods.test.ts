import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../../src/protocol/rpc.js";
import { type Child, spawnChild, waitReady } from "../../src/testkit/child.js";
import { ensureBuilt, killAllCli, runCli, spawnCli } from "../../src/testkit/cli.js";
import { type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { freePort } from "../../src/testkit/ports.js";
import { tempDir } from "../../src/testkit/temp-dir.js";
import { ensureHelm, FULL, type Manifest, NS, one, render } from "./helm.js";

/**
 * The chart's pods, run as processes: the server container's args and env as rendered, with only
 * what Kubernetes would supply swapped in (the pod's name, the mounted limits directory, and,
 * since these run on one machine, loopback ports, addresses and a local etcd). They must become
 * ready on the readiness probe's path, serve the chart's limits, and, stopped as Kubernetes stops
 * them (SIGTERM), exit 0 within the rendered terminationGracePeriodSeconds.
 */

let work: string;
let etcd: EtcdProcess | undefined;
let chartEtcd: Child | undefined;
beforeAll(async () => {
  await ensureHelm();
  ensureBuilt();
  work = tempDir("shardlimit-pods-");
}, 240_000);
afterEach(async () => {
  await killAllCli();
});
afterAll(async () => {
  await chartEtcd?.stop();
  await etcd?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

interface Pod {
  name: string;
  child: Child;
  grpcPort: number;
  httpPort: number;
}

/** The limits ConfigMap as the mounted directory. */
function mountLimits(docs: Manifest[], dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const [f, text] of Object.entries(
    one(docs, "ConfigMap", `${FULL}-limits`).data as Record<string, string>,
  )) {
    writeFileSync(path.join(dir, f), text);
  }
  return dir;
}

/** Starts pod `name` of `workload` with its rendered args and env, swapping in what Kubernetes supplies. */
async function startPod(workload: Manifest, name: string, limitsDir: string, etcdUrl?: string): Promise<Pod> {
  const c = workload.spec.template.spec.containers.find((x: Manifest) => x.name === "shardlimit");
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const swapped = (c.args as string[]).map((a) => {
    const [flag] = a.split("=");
    if (flag === "--config") return `--config=${limitsDir}`;
    if (flag === "--grpc-port") return `--grpc-port=${grpcPort}`;
    if (flag === "--http-port") return `--http-port=${httpPort}`;
    if (flag === "--etcd") return `--etcd=${etcdUrl}`;
    if (flag === "--advertise-address") return `--advertise-address=127.0.0.1:${grpcPort}`;
    return a.replaceAll("$(POD_NAME)", name);
  });
  const env = Object.fromEntries(
    (c.env as Manifest[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value as string]),
  );
  expect(env.NODE_OPTIONS).toMatch(/^--max-old-space-size=\d+ --max-semi-space-size=\d+$/);
  const child = spawnCli([...swapped, "--grpc-host=127.0.0.1", "--http-host=127.0.0.1"], {
    cli: "built",
    env,
  });
  return { name, child, grpcPort, httpPort };
}

/** Ready as the kubelet judges it: the readiness probe's path answers 200. */
async function probeReady(workload: Manifest, pod: Pod): Promise<void> {
  const c = workload.spec.template.spec.containers[0];
  expect(c.readinessProbe.httpGet.port).toBe("http");
  const url = `http://127.0.0.1:${pod.httpPort}${c.readinessProbe.httpGet.path}`;
  await waitReady(pod.child, `${pod.name} ready on ${url}`, () =>
    fetch(url).then(
      (r) => r.status === 200,
      () => false,
    ),
  );
}

/** SIGTERM, as the kubelet sends it; the exit and how long it took against the grace period. */
async function terminate(workload: Manifest, pod: Pod) {
  const graceMs = workload.spec.template.spec.terminationGracePeriodSeconds * 1000;
  const t0 = performance.now();
  pod.child.child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    pod.child.exited,
    new Promise((resolve) => {
      timer = setTimeout(() => resolve("SIGKILL: past the grace period"), graceMs);
    }),
  ]);
  clearTimeout(timer);
  return { exit, ms: performance.now() - t0, graceMs };
}

async function check(pod: Pod, key: string) {
  const rpc = connect(`127.0.0.1:${pod.grpcPort}`);
  try {
    return (await rpc.check({ items: [{ key, cost: 1 }] }, { deadlineMs: 5000 })).results[0]!;
  } finally {
    rpc.close();
  }
}

describe("the chart's pods as processes", () => {
  it("standalone: ready on the probe, serves the chart's limits, stops on SIGTERM within the grace period", async () => {
    const docs = render({ resources: { limits: { memory: "512Mi" } } });
    const d = one(docs, "Deployment", FULL);
    const pod = await startPod(d, `${FULL}-abc12`, mountLimits(docs, path.join(work, "standalone")));
    await probeReady(d, pod);
    expect(await check(pod, "api/tenant=acme")).toMatchObject({ allowed: true, limit: 100 });
    const { exit, ms, graceMs } = await terminate(d, pod);
    expect(exit, pod.child.output()).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(graceMs);
  }, 60_000);

  it("cluster: three members form a cluster through etcd; the highest drains and exits within the grace period", async () => {
    etcd = await startEtcd();
    const docs = render({
      mode: "cluster",
      replicaCount: 3,
      etcd: { endpoints: ["http://etcd.invalid:2379"] },
      prefix: `/pods-${process.pid}/`,
      drainTimeoutMs: 5000,
      shutdownGraceMs: 500,
      resources: { limits: { memory: "512Mi" } },
    });
    const sts = one(docs, "StatefulSet", FULL);
    const limits = mountLimits(docs, path.join(work, "cluster"));
    const pods: Pod[] = [];
    for (let i = 0; i < sts.spec.replicas; i++) {
      pods.push(await startPod(sts, `${FULL}-${i}`, limits, etcd.url));
    }
    await Promise.all(pods.map((p) => probeReady(sts, p)));
    // Every member answers for every key (forwarding to the owner), with the chart's limit.
    for (const p of pods) {
      expect(await check(p, `api/tenant=t-${p.name}`), p.name).toMatchObject({ allowed: true, limit: 100 });
    }
    // A rolling update stops the highest ordinal first.
    const last = pods[pods.length - 1]!;
    const { exit, ms, graceMs } = await terminate(sts, last);
    expect(exit, last.child.output()).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(graceMs);
    const msgs = last.child.lines.map((l) => JSON.parse(l).msg as string);
    expect(msgs).toContain("drained");
    for (const p of pods.slice(0, -1)) await probeReady(sts, p);
    expect(await check(pods[0]!, `api/tenant=t-${last.name}`)).toMatchObject({ allowed: true, limit: 100 });
  }, 120_000);

  it("limits from etcd: a member run as rendered serves the pushed version and switches to the next push", async () => {
    etcd ??= await startEtcd();
    const prefix = `/pods-limits-${process.pid}/`;
    const docs = render({
      mode: "cluster",
      replicaCount: 1,
      limitsFrom: "etcd",
      etcd: { endpoints: ["http://etcd.invalid:2379"] },
      prefix,
      resources: { limits: { memory: "512Mi" } },
    });
    const sts = one(docs, "StatefulSet", FULL);
    const dir = path.join(work, "pushed");
    mkdirSync(dir, { recursive: true });
    const push = (n: number) => {
      const f = path.join(dir, `v${n}.yaml`);
      writeFileSync(
        f,
        `domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: { unit: second, requests_per_unit: ${n} }\n`,
      );
      return runCli(["limits", "push", f, "--etcd", etcd!.url, "--prefix", prefix]);
    };
    expect(push(7).status).toBe(0);
    const pod = await startPod(sts, `${FULL}-0`, "/no-limits-mounted", etcd.url);
    await probeReady(sts, pod);
    expect(await check(pod, "api/tenant=acme")).toMatchObject({ allowed: true, limit: 7 });
    const next = push(9);
    expect(next.status, next.stderr).toBe(0);
    expect(next.stdout).toContain(`in force on 1 of 1 servers (${FULL}-0)`);
    expect(await check(pod, "api/tenant=acme")).toMatchObject({ allowed: true, limit: 9 });
    const { exit } = await terminate(sts, pod);
    expect(exit, pod.child.output()).toEqual({ code: 0, signal: null });
  }, 120_000);

  it("cluster with the chart's etcd: the etcd pod's command runs, is ready on its probe, and a member joins it", async () => {
    const docs = render({
      mode: "cluster",
      replicaCount: 1,
      etcd: { enabled: true, replicas: 1 },
      resources: { limits: { memory: "512Mi" } },
    });
    const sts = one(docs, "StatefulSet", `${FULL}-etcd`);
    const c = sts.spec.template.spec.containers[0];
    const podName = `${FULL}-etcd-0`;
    // Each URL's Kubernetes host and fixed port (client 2379, peer 2380, metrics 2381) becomes
    // loopback and a free port; the data directory a temp dir.
    const ports = new Map<string, number>();
    for (const p of ["2379", "2380", "2381"]) ports.set(p, await freePort());
    const [cmd, ...args] = (c.command as string[]).map((a) =>
      a
        .replaceAll("$(POD_NAME)", podName)
        .replace(/^--data-dir=.*/, `--data-dir=${path.join(work, "etcd-data")}`)
        .replace(
          /(https?):\/\/[^:/,]+:(2379|2380|2381)/g,
          (_m, scheme, port) => `${scheme}://127.0.0.1:${ports.get(port)}`,
        ),
    );
    expect(cmd).toBe("etcd");
    chartEtcd = spawnChild(cmd!, args);
    const probe = c.readinessProbe.httpGet;
    const metricsPort = c.ports.find((p: Manifest) => p.name === probe.port).containerPort;
    await waitReady(chartEtcd, "the chart's etcd ready on its probe", () =>
      fetch(`http://127.0.0.1:${ports.get(String(metricsPort))}${probe.path}`).then(
        (r) => r.status === 200,
        () => false,
      ),
    );
    // The server's --etcd names the etcd pod's client URL; here that pod's URL is loopback.
    const server = one(docs, "StatefulSet", FULL);
    const etcdFlag = (server.spec.template.spec.containers[0].args as string[]).find((a) =>
      a.startsWith("--etcd="),
    );
    expect(etcdFlag).toBe(`--etcd=http://${podName}.${FULL}-etcd.${NS}.svc:2379`);
    const pod = await startPod(
      server,
      `${FULL}-0`,
      mountLimits(docs, path.join(work, "with-etcd")),
      `http://127.0.0.1:${ports.get("2379")}`,
    );
    await probeReady(server, pod);
    expect(await check(pod, "api/tenant=acme")).toMatchObject({ allowed: true, limit: 100 });
  }, 90_000);
});
