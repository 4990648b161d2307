import { rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { Range } from "etcd3";
import { connectEtcd } from "../cluster/etcd-client.js";
import { type EtcdAccess, readEtcdAccess } from "../security/etcd-access.js";
import { type Child, spawnChild, waitReady } from "./child.js";
import { freePort } from "./ports.js";
import { tempDir } from "./temp-dir.js";

export interface EtcdProcess {
  /** Client URL, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  readonly dataDir: string;
  /** The running process (undefined while stopped). */
  pid(): number | undefined;
  /** Stops the process, keeping its data dir so `start` brings the same member back. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
  /** How a client reaches it (TLS credentials, user/password), for `connectEtcd`. */
  readonly access: EtcdAccess;
  /** The flags a `shardlimit` command needs next to `--etcd` to reach it. */
  readonly accessArgs: string[];
  /** The same as one of `auth.users` (its own --etcd-auth-file). */
  userArgs(name: string): string[];
}

/** One permission of a role, as `etcdctl role grant-permission ROLE PERM KEY [END] [--prefix]` gives it. */
export interface EtcdGrant {
  permission: "Read" | "Write" | "Readwrite";
  key: string;
  /** The range's end (exclusive); without it and `prefix`, the one key. */
  end?: string;
  prefix?: boolean;
}

export interface EtcdStartOptions {
  /**
   * TLS on the client port (https://): etcd's certificate and key, and the CA it verifies
   * client certificates against, required of every client (--client-cert-auth). `client` is
   * the certificate the kit's own client and `accessArgs` present.
   */
  tls?: { ca: string; cert: string; key: string; client: { cert: string; key: string } };
  /**
   * User/password auth on: the root user with this password (written to `authFile` for
   * --etcd-auth-file), and `roles` and `users` made before auth is turned on.
   */
  auth?: {
    password: string;
    roles?: { name: string; grants: EtcdGrant[] }[];
    users?: { name: string; password: string; roles: string[] }[];
  };
}

async function healthy(url: string, access: EtcdAccess): Promise<boolean> {
  if (!url.startsWith("https://")) {
    const res = await fetch(`${url}/health`);
    const body = (await res.json()) as { health?: string };
    return body.health === "true";
  }
  const c = access.credentials!;
  const text = await new Promise<string>((resolve, reject) => {
    const req = https.get(
      `${url}/health`,
      { ca: c.rootCertificate, cert: c.certChain, key: c.privateKey },
      (res) => {
        let b = "";
        res.on("data", (d: Buffer) => {
          b += d.toString();
        });
        res.on("end", () => resolve(b));
      },
    );
    req.on("error", reject);
  });
  return (JSON.parse(text) as { health?: string }).health === "true";
}

/**
 * Turns on etcd's auth: a root role and user (etcdctl's `user add root` + `auth enable`), and the
 * roles and users asked for (`role add`, `role grant-permission`, `user add`, `user grant-role`).
 */
async function enableAuth(
  url: string,
  access: EtcdAccess,
  auth: NonNullable<EtcdStartOptions["auth"]>,
): Promise<void> {
  const client = connectEtcd([url], { credentials: access.credentials });
  try {
    await client.role("root").create();
    await client.user("root").create(auth.password);
    await client.user("root").addRole("root");
    for (const r of auth.roles ?? []) {
      const role = await client.role(r.name).create();
      for (const g of r.grants) {
        const range = g.prefix ? Range.prefix(g.key) : new Range(g.key, g.end ?? `${g.key}\0`);
        await role.grant({ permission: g.permission, range });
      }
    }
    for (const u of auth.users ?? []) {
      const user = await client.user(u.name).create(u.password);
      for (const r of u.roles) await user.addRole(r);
    }
    await client.auth.authEnable();
  } finally {
    client.close();
  }
}

/**
 * A real single-member etcd (from PATH) on free loopback ports with a temporary data dir;
 * with TLS and auth as `opts` asks. Always `destroy()` it; a process exit kills any still running.
 */
export async function startEtcd(opts: EtcdStartOptions = {}): Promise<EtcdProcess> {
  const clientPort = await freePort();
  const peerPort = await freePort();
  const dataDir = tempDir("shardlimit-etcd-");
  const url = `${opts.tls ? "https" : "http"}://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name=shardlimit",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=shardlimit=${peer}`,
    "--log-level=error",
    ...(opts.tls
      ? [
          `--cert-file=${opts.tls.cert}`,
          `--key-file=${opts.tls.key}`,
          `--trusted-ca-file=${opts.tls.ca}`,
          "--client-cert-auth",
        ]
      : []),
  ];
  const accessArgs: string[] = [];
  if (opts.tls) {
    const { ca, client } = opts.tls;
    accessArgs.push("--etcd-ca", ca, "--etcd-cert", client.cert, "--etcd-key", client.key);
  }
  let authFile: string | undefined;
  if (opts.auth) {
    authFile = path.join(dataDir, "..", `${path.basename(dataDir)}-auth`);
    writeFileSync(authFile, `root:${opts.auth.password}\n`, { mode: 0o600 });
    accessArgs.push("--etcd-auth-file", authFile);
  }
  const access: EtcdAccess = readEtcdAccess(
    { ca: opts.tls?.ca, cert: opts.tls?.client.cert, key: opts.tls?.client.key, authFile },
    [url],
  );
  let child: Child | undefined;
  const start = async () => {
    child = spawnChild("etcd", args);
    await waitReady(child, "etcd (is it installed? Debian: apt-get install etcd-server)", () =>
      healthy(url, access),
    );
  };
  const stop = async () => {
    await child?.stop("SIGTERM");
    child = undefined;
  };
  await start();
  if (opts.auth) await enableAuth(url, access, opts.auth);
  const userFiles = new Map<string, string>();
  const userArgs = (name: string): string[] => {
    const u = opts.auth?.users?.find((x) => x.name === name);
    if (!u) throw new Error(`no etcd user ${name} was asked for`);
    let file = userFiles.get(name);
    if (file === undefined) {
      file = path.join(dataDir, "..", `${path.basename(dataDir)}-auth-${name}`);
      writeFileSync(file, `${name}:${u.password}\n`, { mode: 0o600 });
      userFiles.set(name, file);
    }
    return [
      ...accessArgs.filter((_, i, all) => all[i] !== "--etcd-auth-file" && all[i - 1] !== "--etcd-auth-file"),
      "--etcd-auth-file",
      file,
    ];
  };
  return {
    url,
    dataDir,
    access,
    accessArgs,
    userArgs,
    pid: () => child?.pid,
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
      if (authFile !== undefined) rmSync(authFile, { force: true });
      for (const f of userFiles.values()) rmSync(f, { force: true });
    },
  };
}
