import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync } from "node:fs";
import path from "node:path";
import dockerignoreModule from "@balena/dockerignore";
import { Copy, DockerfileParser, Env, Healthcheck, type Instruction, JSONInstruction } from "dockerfile-ast";

/**
 * The Dockerfile read with dockerfile-ast and laid out on disk the way `docker build` would make
 * the image, for a machine without a Docker engine: each stage gets a directory standing for
 * the image's `/`, COPY copies from the build context (minus .dockerignore) or from an earlier
 * stage's directory, RUN runs the few commands this file knows (anything else fails, so a new
 * step in the Dockerfile cannot go unchecked).
 */

// CommonJS (module.exports = the factory) typed as an ES default export: under NodeNext the
// default import is module.exports itself, which the types call `.default`.
const dockerignore = dockerignoreModule as unknown as typeof dockerignoreModule.default;
type Ignore = ReturnType<typeof dockerignore>;

/** The build context's .dockerignore, with Docker's matching rules. */
export function readDockerignore(context: string): Ignore {
  return dockerignore({ ignorecase: false }).add(
    readFileSync(path.join(context, ".dockerignore"), "utf8").split("\n"),
  );
}

export interface Stage {
  name: string | undefined;
  base: string;
  instructions: Instruction[];
}

export interface Image {
  stages: Stage[];
  /** The last stage, as `docker run` sees it. */
  env: Record<string, string>;
  workdir: string;
  user: { uid: number; gid: number } | undefined;
  exposed: number[];
  entrypoint: string[];
  cmd: string[];
  /** The exec-form HEALTHCHECK command and its flags (interval, timeout...). */
  healthcheck: { cmd: string[]; flags: Record<string, string> } | undefined;
}

export function parseDockerfile(text: string): Image {
  const stages: Stage[] = [];
  for (const i of DockerfileParser.parse(text).getInstructions()) {
    const kw = i.getKeyword();
    if (kw === "FROM") {
      const args = i.getArguments().map((a) => a.getValue());
      const as = args.findIndex((a) => a.toUpperCase() === "AS");
      stages.push({ name: as >= 0 ? args[as + 1] : undefined, base: args[0]!, instructions: [] });
    } else {
      if (stages.length === 0) throw new Error(`Dockerfile: ${kw} before any FROM`);
      stages.at(-1)!.instructions.push(i);
    }
  }
  const last = stages.at(-1);
  if (!last) throw new Error("Dockerfile: no FROM");
  const image: Image = {
    stages,
    env: {},
    workdir: "/",
    user: undefined,
    exposed: [],
    entrypoint: [],
    cmd: [],
    healthcheck: undefined,
  };
  for (const i of last.instructions) {
    const kw = i.getKeyword();
    if (kw === "ENV" && i instanceof Env) {
      for (const p of i.getProperties()) image.env[p.getName()] = p.getUnescapedValue() ?? "";
    } else if (kw === "WORKDIR") {
      image.workdir = path.posix.resolve(image.workdir, i.getArgumentsContent() ?? "");
    } else if (kw === "USER") {
      const m = /^(\d+):(\d+)$/.exec(i.getArgumentsContent() ?? "");
      if (!m) throw new Error(`Dockerfile: USER ${i.getArgumentsContent()} is not numeric uid:gid`);
      image.user = { uid: Number(m[1]), gid: Number(m[2]) };
    } else if (kw === "EXPOSE") {
      image.exposed = i.getArguments().map((a) => Number.parseInt(a.getValue(), 10));
    } else if ((kw === "ENTRYPOINT" || kw === "CMD") && i instanceof JSONInstruction) {
      const words = i.getJSONStrings().map((s) => s.getJSONValue());
      if (words.length === 0) throw new Error(`Dockerfile: ${kw} must be in exec form (a JSON array)`);
      if (kw === "ENTRYPOINT") image.entrypoint = words;
      else image.cmd = words;
    } else if (kw === "HEALTHCHECK" && i instanceof Healthcheck) {
      const content = i.getArgumentsContent() ?? "";
      const json = content.slice(content.indexOf("CMD") + 3).trim();
      const flags = Object.fromEntries(i.getFlags().map((f) => [f.getName(), f.getValue() ?? ""]));
      image.healthcheck = { cmd: JSON.parse(json) as string[], flags };
    }
  }
  return image;
}

/** What the layout did, for the test's assertions. */
export interface Layout {
  /** Each stage's directory (its `/`), by stage name or index. */
  roots: Map<string, string>;
  /** Commands RUN ran, and those it left out (with why). */
  ran: string[];
  skipped: string[];
}

export interface LayoutOptions {
  context: string;
  /** A fresh empty directory to build the stages in. */
  workDir: string;
  /**
   * The build stage's `npm ci` (every dependency, ~300 MB) as a link to the context's own
   * node_modules, installed from the same lockfile. The runtime stage's `npm ci --omit=dev` runs.
   */
  linkFullInstall: boolean;
}

/** Lays out every stage of `image` in turn under `workDir`. */
export function layOut(image: Image, opts: LayoutOptions): Layout {
  const ignore = readDockerignore(opts.context);
  const layout: Layout = { roots: new Map(), ran: [], skipped: [] };
  image.stages.forEach((stage, index) => {
    const root = path.join(opts.workDir, `stage-${index}`);
    mkdirSync(root, { recursive: true });
    // Like an image's /: readable by the image's user.
    chmodSync(opts.workDir, 0o755);
    chmodSync(root, 0o755);
    layout.roots.set(stage.name ?? String(index), root);
    let workdir = "/";
    const inImage = (p: string) => path.join(root, path.posix.resolve(workdir, p));
    for (const i of stage.instructions) {
      const kw = i.getKeyword();
      if (kw === "WORKDIR") {
        workdir = path.posix.resolve(workdir, i.getArgumentsContent() ?? "");
        mkdirSync(inImage("."), { recursive: true });
      } else if (kw === "COPY" && i instanceof Copy) {
        const words = i.getArguments().map((a) => a.getValue());
        const dest = words.pop()!;
        const from = i.getFromFlag()?.getValue() ?? undefined;
        for (const src of words) {
          const target = dest.endsWith("/") ? path.join(inImage(dest), path.basename(src)) : inImage(dest);
          if (from !== undefined) {
            const fromRoot = layout.roots.get(from);
            if (!fromRoot) throw new Error(`COPY --from=${from}: no such stage before this one`);
            cpSync(path.join(fromRoot, src), target, { recursive: true });
          } else {
            copyFromContext(opts.context, src, target, ignore);
          }
        }
      } else if (kw === "RUN") {
        for (const command of (i.getArgumentsContent() ?? "").split("&&").map((c) => c.trim())) {
          run(command, inImage("."), opts, layout);
        }
      } else if (!["ENV", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"].includes(kw)) {
        throw new Error(`the image layout does not know ${kw}: teach test/deploy/dockerfile.ts`);
      }
    }
  });
  return layout;
}

function copyFromContext(context: string, src: string, target: string, ignore: Ignore): void {
  const rel = path.posix.normalize(src);
  if (rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`COPY ${src}: outside the build context`);
  if (!existsSync(path.join(context, rel)) || ignore.ignores(rel)) {
    throw new Error(`COPY ${src}: not in the build context (missing, or excluded by .dockerignore)`);
  }
  cpSync(path.join(context, rel), target, {
    recursive: true,
    filter: (from) => {
      const r = path.relative(context, from).split(path.sep).join("/");
      return r === "" || !ignore.ignores(statSync(from).isDirectory() ? `${r}/` : r);
    },
  });
}

function run(command: string, cwd: string, opts: LayoutOptions, layout: Layout): void {
  const words = command.split(/\s+/);
  const [prog, sub] = words;
  if (prog === "npm" && sub === "ci" && !words.includes("--omit=dev") && opts.linkFullInstall) {
    symlinkSync(path.join(opts.context, "node_modules"), path.join(cwd, "node_modules"));
    layout.skipped.push(`${command} (linked to the context's node_modules)`);
    return;
  }
  if (prog === "npm" && (sub === "ci" || (sub === "run" && words[2] === "build"))) {
    // --prefer-offline: npm's cache on this machine answers what the registry would.
    const args = sub === "ci" ? [...words.slice(1), "--prefer-offline", "--loglevel=error"] : words.slice(1);
    const r = spawnSync("npm", args, { cwd, encoding: "utf8", timeout: 240_000 });
    if (r.status !== 0) throw new Error(`RUN ${command} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
    layout.ran.push(command);
    return;
  }
  if (prog === "npm" && sub === "cache") {
    layout.skipped.push(`${command} (the image's npm cache; this machine's is not the image's)`);
    return;
  }
  if (prog === "groupadd" || prog === "useradd") {
    layout.skipped.push(`${command} (the user runs by the numeric USER)`);
    return;
  }
  throw new Error(`the image layout does not know RUN ${command}: teach test/deploy/dockerfile.ts`);
}

/** An image path (`/app/...`) as a path under the stage's directory; other words unchanged. */
export function inRoot(root: string, word: string): string {
  if (!word.startsWith("/")) return word;
  const p = path.join(root, word);
  return existsSync(p) ? p : word;
}
